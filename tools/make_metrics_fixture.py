"""Write tests/fixtures/metrics.json: reference values for src/metrics.

Per pair: sacreBLEU sentence BLEU, rouge-score ROUGE-1/2/L (use_stemmer=True) precision,
recall and F-measure, SQuAD v1.1 F1 and exact match, plus the intermediate tokenizations
(13a tokens, rouge tokens, SQuAD normalisation) for debugging. Per corpus: sacreBLEU
corpus BLEU and the mean per-pair ROUGE / F1 / EM. Plus nltk PorterStemmer stems of a
word list. Run through tools/make_metrics_fixture.sh (pinned venv).
"""

import argparse
import collections
import json
import re
import string
from importlib.metadata import version

import sacrebleu
from nltk.stem import porter
from rouge_score import rouge_scorer, tokenize

# ---- SQuAD v1.1 evaluate-v1.1.py (verbatim functions) ----------------------------------


def normalize_answer(s):
    """Lower text and remove punctuation, articles and extra whitespace."""

    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def f1_score(prediction, ground_truth):
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def exact_match_score(prediction, ground_truth):
    return normalize_answer(prediction) == normalize_answer(ground_truth)


# ---- test cases ------------------------------------------------------------------------

LONG_REF = (
    "The committee, which met on Tuesday in Brussels, agreed that the new regulations "
    "would be introduced gradually over the next three years, starting with the largest "
    "companies and extending to smaller businesses by 2027, although several members "
    "expressed concerns about the costs."
)
LONG_HYP = (
    "On Tuesday the committee met in Brussels and agreed the new rules will be introduced "
    "gradually over three years, beginning with the biggest companies and extending to "
    "small businesses by 2027, though some members were concerned about costs."
)

PAIRS = [
    ("identical", "The cat sat on the mat.", "The cat sat on the mat."),
    ("identical_long", LONG_REF, LONG_REF),
    ("empty_prediction", "", "The cat sat on the mat."),
    ("empty_reference", "The cat sat on the mat.", ""),
    ("both_empty", "", ""),
    ("whitespace_only", "   \t ", "a b"),
    ("punctuation_only", "!!! ... ???", "!!! ... ???"),
    ("punctuation_attached", "Hello,world!It's (really) fine:yes.", "Hello, world! It's really fine: yes."),
    ("casing", "THE QUICK BROWN FOX", "the quick brown fox"),
    ("casing_mixed", "New York City is Big", "new york city is big"),
    ("numbers", "It cost $1,234.56 in 2023-2024, up 3.5%.", "It cost $1234.56 in 2023 - 2024, up 3.5 %."),
    ("numbers_words", "There were 3 apples and 12 pears", "there were three apples and twelve pears"),
    ("contractions", "I can't believe it's not butter, don't you?", "I cannot believe it is not butter, do you not?"),
    ("contractions_same", "We'll see; they're here and you've won.", "We will see; they are here and you have won."),
    ("unicode_accents", "Le café était très agréable à Zürich.", "Le cafe etait tres agreable a Zurich."),
    ("unicode_accents_same", "naïve résumé façade", "naïve résumé façade"),
    ("unicode_cjk", "我爱自然语言处理 and NLP", "我喜欢自然语言处理 and NLP"),
    ("unicode_cjk_only", "东京是日本的首都。", "东京是日本的首都。"),
    ("unicode_emoji", "I love pizza 🍕🍕 so much 😀!", "I love pizza 🍕 very much 😀"),
    ("unicode_mixed_scripts", "Привет мир, hello world — ελληνικά", "привет мир hello world ελληνικα"),
    ("short_1_token", "Yes", "Yes"),
    ("short_1_token_diff", "yes", "no"),
    ("short_2_tokens", "good morning", "good morning"),
    ("short_3_tokens", "see you later", "see you soon"),
    ("short_vs_long", "the cat", "the cat sat on the mat with a hat"),
    ("long_vs_short", "the cat sat on the mat with a hat", "the cat"),
    ("repeated_words", "the the the the the the the", "the cat is on the mat"),
    ("repeated_ngrams", "a b a b a b a b", "a b a b c"),
    ("word_order", "mat the on sat cat the", "the cat sat on the mat"),
    ("stemming_running", "He was running and runs daily", "He ran and run every day"),
    ("stemming_adverbs", "She generously and hopefully donated", "she was generous and hopeful when donating"),
    ("stemming_derivations", "The nationalization of the relational databases", "nationalize relation database"),
    ("stemming_irregular", "Skies dying lying news innings proceed", "sky die lie news inning proceeding"),
    ("stemming_y", "happy happiness happily enjoy enjoyed flies flying spied", "happiness happy enjoying fly fly spy"),
    ("stemming_ies_ied", "dies died ties tied cries cried ponies", "die die tie tie cry cry pony"),
    ("articles_only", "a an the", "the"),
    ("articles_answer", "the Eiffel Tower", "Eiffel Tower"),
    ("squad_partial", "Denver Broncos won", "the Denver Broncos"),
    ("html_entities", "Tom &amp; Jerry &lt;3 &quot;cartoon&quot;", "Tom & Jerry <3 \"cartoon\""),
    ("hyphens_dashes", "state-of-the-art 2-3 models - well known", "state of the art 2 - 3 models, well-known"),
    ("newlines_tabs", "line one\nline two\tend", "line one line two end"),
    ("long_paraphrase", LONG_HYP, LONG_REF),
    ("long_unrelated", "Quantum computers use qubits that can represent zero and one simultaneously, enabling certain algorithms to outperform classical machines.", LONG_REF),
    ("underscores_symbols", "snake_case foo@bar.com #hashtag 50/50", "snake case foo at bar dot com hashtag 50 50"),
    ("trailing_space_period", "It works .", "It works."),
    ("unicode_case_mapping", "\u0130STANBUL \u212aELVIN 5\u212a ﬁne Stra\u00dfe", "istanbul kelvin 5k fine strasse"),
    ("articles_unicode_boundary", "the théâtre a ñandú an año thé", "théâtre ñandú año"),
]

CORPORA = {
    "small_mixed": [
        ("The cat sat on the mat.", "The cat sat on the mat."),
        ("A dog barked loudly at night", "The dog barked loudly all night."),
        ("It is raining", "It rains heavily today."),
    ],
    "translation_like": [
        ("The president met with the prime minister on Monday.", "The president met the prime minister on Monday."),
        ("Prices rose by 3.2% in March, the highest since 2008.", "Prices rose 3.2% in March, the highest level since 2008."),
        ("He said that the project will finish next year.", "He said the project would be finished next year."),
        ("Scientists discovered a new species of frog in the Amazon.", "Scientists have discovered a new frog species in the Amazon."),
        ("The match was cancelled because of the heavy rain.", "The game was called off due to heavy rain."),
        (LONG_HYP, LONG_REF),
    ],
    "short_segments": [
        ("yes", "yes"),
        ("no way", "no way"),
        ("ok", "okay"),
    ],
    "no_4gram_match": [
        ("one two three four five", "five four three two one"),
        ("alpha beta gamma", "alpha gamma beta"),
    ],
    "with_empty": [
        ("", "Something was said here."),
        ("The answer is 42.", "The answer is 42."),
        ("Nothing", ""),
    ],
    "hyp_longer": [
        ("the cat sat on the mat and then it slept for a very long time", "the cat sat on the mat"),
        ("we went to the store and bought some milk and bread and eggs", "we went to the store"),
    ],
    "unicode_corpus": [
        ("Le café était très agréable.", "Le café était agréable."),
        ("我爱自然语言处理", "我喜欢自然语言处理"),
        ("I love pizza 🍕", "I love pizza 🍕 a lot"),
        ("Größe und Maße sind wichtig", "Größe und Maße sind sehr wichtig"),
    ],
}

STEM_WORDS = """
running runs ran run runner generously generous hopefully hopeful hopefulness
caresses ponies ties caress cats feed agreed plastered bled motoring sing conflated
troubled sized hopping tanned falling hissing fizzed failing filing happy sky skies
relational conditional rational valenci hesitanci digitizer conformabli radicalli
differentli vileli analogousli vietnamization predication operator feudalism
decisiveness hopefulness callousness formaliti sensitiviti sensibiliti triplicate
formative formalize electriciti electrical hopeful goodness revival allowance
inference airliner gyroscopic adjustable defensible irritant replacement adjustment
dependent adoption homologou communism activate angulariti homologous effective
bowdlerize probate rate cease controll roll dying lying tying news innings inning
outings outing cannings canning howe proceed exceed succeed flies dies spied died
enjoy enjoyment fly spy try tried cries cried generalization generalizations
nationalization relational databases archaeology geology theology philology
beautifully fully cheerfully beautiful yyyy sayy toy syzygy ivy trees troubles
private oaten orrery by tree ee tr oats generations conditionally fullness
happiness happily skiing skis news was this has does goes going gone
agreement agreements crying dying dried drying abilities ability possibly
""".split()

ROUGE_TYPES = ["rouge1", "rouge2", "rougeL"]


def rouge_dict(scorer, pred, ref):
    s = scorer.score(ref, pred)
    return {
        k: {"precision": s[k].precision, "recall": s[k].recall, "fmeasure": s[k].fmeasure}
        for k in ROUGE_TYPES
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    scorer = rouge_scorer.RougeScorer(ROUGE_TYPES, use_stemmer=True)
    stemmer = porter.PorterStemmer()
    tok13a = sacrebleu.BLEU()._preprocess_segment

    pairs = []
    for name, pred, ref in PAIRS:
        pairs.append(
            {
                "name": name,
                "prediction": pred,
                "reference": ref,
                "sentence_bleu": sacrebleu.sentence_bleu(pred, [ref]).score,
                "corpus_bleu_single": sacrebleu.corpus_bleu([pred], [[ref]]).score,
                "rouge": rouge_dict(scorer, pred, ref),
                "f1": float(f1_score(pred, ref)),
                "exact_match": float(exact_match_score(pred, ref)),
                "tokens_13a": {"prediction": tok13a(pred).split(), "reference": tok13a(ref).split()},
                "tokens_rouge": {
                    "prediction": tokenize.tokenize(pred, stemmer),
                    "reference": tokenize.tokenize(ref, stemmer),
                },
                "squad_normalized": {
                    "prediction": normalize_answer(pred),
                    "reference": normalize_answer(ref),
                },
            }
        )

    corpora = []
    all_corpora = dict(CORPORA)
    all_corpora["all_pairs"] = [(p, r) for _, p, r in PAIRS]
    for name, items in all_corpora.items():
        preds = [p for p, _ in items]
        refs = [r for _, r in items]
        n = max(len(items), 1)
        rs = [scorer.score(r, p) for p, r in items]
        bleu = sacrebleu.corpus_bleu(preds, [refs])
        corpora.append(
            {
                "name": name,
                "predictions": preds,
                "references": refs,
                "bleu": bleu.score,
                "bleu_counts": list(bleu.counts),
                "bleu_totals": list(bleu.totals),
                "bleu_sys_len": bleu.sys_len,
                "bleu_ref_len": bleu.ref_len,
                "rouge1": sum(s["rouge1"].fmeasure for s in rs) / n,
                "rouge2": sum(s["rouge2"].fmeasure for s in rs) / n,
                "rougeL": sum(s["rougeL"].fmeasure for s in rs) / n,
                "f1": 100.0 * sum(f1_score(p, r) for p, r in items) / n,
                "exact_match": 100.0 * sum(exact_match_score(p, r) for p, r in items) / n,
            }
        )

    # Every token the pairs produce plus the word list, stemmed by nltk's default stemmer.
    words = set(w.lower() for w in STEM_WORDS)
    for _, p, r in PAIRS:
        for text in (p, r):
            words.update(tokenize.tokenize(text, None))
    stems = {w: stemmer.stem(w) for w in sorted(words)}

    out = {
        "generator": "tools/make_metrics_fixture.sh",
        "versions": {
            "sacrebleu": version("sacrebleu"),
            "rouge-score": version("rouge-score"),
            "nltk": version("nltk"),
        },
        "notes": {
            "sentence_bleu": "sacrebleu.sentence_bleu(pred, [ref]) (exp smoothing, effective order)",
            "bleu": "sacrebleu.corpus_bleu(preds, [refs]) defaults: 13a, exp, 4-grams; 0..100",
            "rouge": "rouge_scorer.RougeScorer(['rouge1','rouge2','rougeL'], use_stemmer=True).score(ref, pred); 0..1; corpus = mean F-measure",
            "squad": "SQuAD v1.1 f1_score / exact_match_score per pair in 0..1; corpus = 100 * mean",
            "stemmer": "nltk.stem.porter.PorterStemmer() default mode NLTK_EXTENSIONS",
        },
        "pairs": pairs,
        "corpora": corpora,
        "stems": stems,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {args.out}: {len(pairs)} pairs, {len(corpora)} corpora, {len(stems)} stems")


if __name__ == "__main__":
    main()
