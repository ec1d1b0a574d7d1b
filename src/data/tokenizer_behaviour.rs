//! What a tokenizer does, as opposed to how its `tokenizer.json` is written: two files that
//! encode every text to the same ids and decode every id sequence to the same text are the
//! same tokenizer, whatever their key order, whitespace, merge notation or irrelevant fields.
//! (GPT-2's tokenizer as `transformers` saves it and as we build it differ in bytes only.)
//!
//! Both tokenizers are read back from `tokenizers`' own serialization, so fields left out of
//! a file are there with their defaults. Compared, in this order:
//!
//! - the vocabulary: token ↔ id, including the added tokens;
//! - the merges, in rank order (`"a b"` and `["a", "b"]` alike);
//! - the model's other settings (`continuing_subword_prefix` / `end_of_word_suffix` `""`
//!   and null alike: both add nothing);
//! - the normalizer, as it is;
//! - the pre-tokenizer, where `ByteLevel`'s `trim_offsets` is left out (offsets only);
//! - the decoder, where `ByteLevel` has no setting that changes decoding;
//! - the added tokens' matching rules (content, id, single_word, lstrip, rstrip, and
//!   `normalized` only where it can change a match: with a normalizer, or when two added
//!   tokens can overlap in a text, since the two kinds are split out in two passes);
//! - truncation and padding.
//!
//! Left out: the post-processor (smelt encodes without special tokens, so it only moves
//! offsets), `special` (smelt never skips special tokens when decoding), `version`.

use std::collections::BTreeSet;

use serde_json::{json, Value};

/// How two tokenizers differ: the first part (in the order above) that does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenizerDifference {
    /// "vocabulary", "merges", "model", "normalizer", "pre-tokenizer", "decoder",
    /// "added tokens", "truncation" or "padding".
    pub part: &'static str,
    /// That part of the first tokenizer, in a few words.
    pub this: String,
    /// That part of the second.
    pub other: String,
}

impl TokenizerDifference {
    /// One line naming both sides: `the vocabulary differs: the data set's has …, the
    /// model's has …`.
    pub fn describe(&self, this: &str, other: &str) -> String {
        let verb = if self.part.ends_with('s') {
            "differ"
        } else {
            "differs"
        };
        format!(
            "the {} {verb}: {this} has {}, {other} has {}",
            self.part, self.this, self.other
        )
    }
}

/// The behaviour-defining parts of a parsed `tokenizer.json`.
pub(crate) struct Behaviour {
    /// (id, token), sorted: the model's vocabulary plus the added tokens.
    vocab: Vec<(u64, String)>,
    merges: Vec<(String, String)>,
    model: Value,
    normalizer: Value,
    pre_tokenizer: Value,
    decoder: Value,
    /// The added tokens' matching rules, by id.
    added: Value,
    truncation: Value,
    padding: Value,
}

impl Behaviour {
    pub(crate) fn of(config: &Value) -> Behaviour {
        let mut model = config["model"].clone();
        let mut vocab = BTreeSet::new();
        let mut merges = Vec::new();
        if let Some(m) = model.as_object_mut() {
            if let Some(v) = m.get("vocab").and_then(Value::as_object) {
                for (token, id) in v {
                    if let Some(id) = id.as_u64() {
                        vocab.insert((id, token.clone()));
                    }
                }
                m.remove("vocab");
            }
            if let Some(list) = m.get("merges").and_then(Value::as_array) {
                merges = list.iter().map(merge_pair).collect();
                m.remove("merges");
            }
            for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
                if m.get(key).and_then(Value::as_str) == Some("") {
                    m.insert(key.into(), Value::Null);
                }
            }
        }
        let tokens: &[Value] = config["added_tokens"].as_array().map_or(&[], Vec::as_slice);
        let contents: Vec<&str> = tokens
            .iter()
            .filter_map(|t| t["content"].as_str())
            .collect();
        let normalized_matters = !config["normalizer"].is_null() || any_overlap(&contents);
        let mut added: Vec<Value> = tokens
            .iter()
            .map(|t| {
                if let (Some(id), Some(content)) = (t["id"].as_u64(), t["content"].as_str()) {
                    vocab.insert((id, content.to_string()));
                }
                let mut rule = json!({
                    "id": t["id"],
                    "content": t["content"],
                    "single_word": t["single_word"],
                    "lstrip": t["lstrip"],
                    "rstrip": t["rstrip"],
                });
                if normalized_matters {
                    rule["normalized"] = t["normalized"].clone();
                }
                rule
            })
            .collect();
        added.sort_by_key(|t| t["id"].as_u64());
        Behaviour {
            vocab: vocab.into_iter().collect(),
            merges,
            model,
            normalizer: config["normalizer"].clone(),
            pre_tokenizer: pre_tokenizer(&config["pre_tokenizer"]),
            decoder: decoder(&config["decoder"]),
            added: added.into(),
            truncation: config["truncation"].clone(),
            padding: config["padding"].clone(),
        }
    }

    /// The first part in which `self` and `other` differ, if any.
    pub(crate) fn difference(&self, other: &Behaviour) -> Option<TokenizerDifference> {
        if self.vocab != other.vocab {
            let i = first_mismatch(&self.vocab, &other.vocab);
            let side = |v: &[(u64, String)]| match v.get(i) {
                Some((id, token)) => format!("{} tokens (id {id} = {token:?})", v.len()),
                None => format!("{} tokens", v.len()),
            };
            return Some(TokenizerDifference {
                part: "vocabulary",
                this: side(&self.vocab),
                other: side(&other.vocab),
            });
        }
        if self.merges != other.merges {
            let i = first_mismatch(&self.merges, &other.merges);
            let side = |m: &[(String, String)]| match m.get(i) {
                Some((a, b)) => format!("{} merges (rank {i} = {:?})", m.len(), format!("{a} {b}")),
                None => format!("{} merges (none at rank {i})", m.len()),
            };
            return Some(TokenizerDifference {
                part: "merges",
                this: side(&self.merges),
                other: side(&other.merges),
            });
        }
        let parts: [(&'static str, &Value, &Value); 7] = [
            ("model", &self.model, &other.model),
            ("normalizer", &self.normalizer, &other.normalizer),
            ("pre-tokenizer", &self.pre_tokenizer, &other.pre_tokenizer),
            ("decoder", &self.decoder, &other.decoder),
            ("added tokens", &self.added, &other.added),
            ("truncation", &self.truncation, &other.truncation),
            ("padding", &self.padding, &other.padding),
        ];
        parts
            .into_iter()
            .find(|(_, a, b)| a != b)
            .map(|(part, a, b)| TokenizerDifference {
                part,
                this: brief(a),
                other: brief(b),
            })
    }
}

/// A merge written as `"a b"` or `["a", "b"]`.
fn merge_pair(m: &Value) -> (String, String) {
    match m {
        Value::String(s) => match s.split_once(' ') {
            Some((a, b)) => (a.to_string(), b.to_string()),
            None => (s.clone(), String::new()),
        },
        Value::Array(p) => (
            p.first().and_then(Value::as_str).unwrap_or("").to_string(),
            p.get(1).and_then(Value::as_str).unwrap_or("").to_string(),
        ),
        other => (other.to_string(), String::new()),
    }
}

/// A pre-tokenizer without the settings that only move offsets.
fn pre_tokenizer(v: &Value) -> Value {
    match v["type"].as_str() {
        Some("ByteLevel") => json!({
            "type": "ByteLevel",
            "add_prefix_space": v["add_prefix_space"],
            "use_regex": v["use_regex"],
        }),
        Some("Sequence") => json!({
            "type": "Sequence",
            "pretokenizers": v["pretokenizers"]
                .as_array()
                .map(|list| list.iter().map(pre_tokenizer).collect::<Vec<_>>()),
        }),
        _ => v.clone(),
    }
}

/// A decoder without settings that decoding ignores (`ByteLevel` maps characters back to
/// bytes whatever its fields say).
fn decoder(v: &Value) -> Value {
    match v["type"].as_str() {
        Some("ByteLevel") => json!({"type": "ByteLevel"}),
        Some("Sequence") => json!({
            "type": "Sequence",
            "decoders": v["decoders"]
                .as_array()
                .map(|list| list.iter().map(decoder).collect::<Vec<_>>()),
        }),
        _ => v.clone(),
    }
}

/// Whether any two of these strings can overlap in some text: one inside the other, or an
/// end of one that begins the other.
fn any_overlap(contents: &[&str]) -> bool {
    contents.iter().enumerate().any(|(i, a)| {
        contents.iter().enumerate().any(|(j, b)| {
            i != j
                && !a.is_empty()
                && !b.is_empty()
                && (a.contains(b)
                    || (1..a.len().min(b.len())).any(|k| {
                        a.is_char_boundary(a.len() - k) && b.starts_with(&a[a.len() - k..])
                    }))
        })
    })
}

fn first_mismatch<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

/// Compact JSON, cut to a readable length.
fn brief(v: &Value) -> String {
    const MAX: usize = 120;
    let s = v.to_string();
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_is_containment_or_a_shared_end() {
        assert!(!any_overlap(&["<|endoftext|>"]));
        assert!(!any_overlap(&["<|im_start|>", "<|im_end|>"]));
        assert!(any_overlap(&["ab", "b"]));
        assert!(any_overlap(&["xy", "yz"]));
        assert!(any_overlap(&["yz", "xy"]));
        assert!(!any_overlap(&["é", "e"]));
    }

    #[test]
    fn merges_read_in_both_notations() {
        assert_eq!(merge_pair(&json!("Ġ t")), ("Ġ".into(), "t".into()));
        assert_eq!(merge_pair(&json!(["Ġ", "t"])), ("Ġ".into(), "t".into()));
    }
}
