//! Opening a data set folder: the one rule that `train`, `evaluate` and `prepare --verify`
//! follow.
//!
//! - A folder with `manifest.json` is a data set made by `prepare`. The manifest must parse
//!   and agree with itself ([`Manifest::read`]); a damaged or empty one is an error, never a
//!   reason to read the folder some other way. Its tokenizer is `tokenizer.json` beside it
//!   (its vocabulary size and end-of-text id must be the manifest's).
//! - A folder without `manifest.json` is read as llm.c's GPT-2 shards: the `.bin` files
//!   that have the split's name as a word of their name (`fineweb_train_000001.bin`,
//!   `TinyStories_val.bin`), sorted, with GPT-2's tokenizer.
//! - A folder with neither is not a data set.
//!
//! Opening a split checks each shard's header, size and token ids ([`Shard::open`]) and, with
//! a manifest, that each holds the token count and width the manifest records (cheap: the
//! header). The sha256 the manifest records for every shard and for `tokenizer.json` are
//! checked only by [`Dataset::verify`], which reads everything (`prepare --verify DIR`).

use std::path::{Path, PathBuf};

use crate::data::loader::ShardSet;
use crate::data::prepare::{Manifest, SPLITS};
use crate::data::shard::{sha256_file, Shard, ShardInfo};
use crate::data::Tokenizer;
use crate::error::{Error, Result};

/// An opened data set folder: its tokenizer and where each split's shards are.
pub struct Dataset {
    dir: PathBuf,
    tokenizer: Tokenizer,
    /// `None` for a folder of llm.c shards.
    manifest: Option<Manifest>,
    /// llm.c shards: every `.bin` file of the folder, sorted (empty with a manifest).
    llm_c_files: Vec<PathBuf>,
}

/// One shard as [`Dataset::verify`] found it.
pub struct ShardCheck<'a> {
    pub split: &'a str,
    pub path: &'a Path,
    /// Tokens it holds (0 when it could not be read).
    pub tokens: u64,
    /// What is wrong with it, if anything.
    pub problem: Option<String>,
}

/// What [`Dataset::verify`] checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub shards: usize,
    pub tokens: u64,
    /// Whether every file's sha256 was compared with a manifest (not for llm.c folders,
    /// which record none).
    pub sha256_checked: bool,
}

impl Dataset {
    /// Opens `dir` by the rules of the module docs.
    pub fn open(dir: &Path) -> Result<Dataset> {
        let meta = std::fs::metadata(dir).map_err(|e| {
            Error::Data(format!(
                "data set {}: {e}; pass a folder made by `prepare` or a folder of llm.c shards",
                dir.display()
            ))
        })?;
        if !meta.is_dir() {
            return Err(Error::Data(format!(
                "data set {} is a file, not a folder; pass the folder made by `prepare`",
                dir.display()
            )));
        }
        if let Some(manifest) = Manifest::read(dir)? {
            let path = dir.join("tokenizer.json");
            let tokenizer = Tokenizer::load(&path)?;
            let recorded = &manifest.tokenizer;
            if tokenizer.vocab_size() != recorded.vocab_size || tokenizer.eot() != recorded.eot {
                return Err(Error::Data(format!(
                    "{}: {} tokens, <|endoftext|> = {}, but manifest.json records {} tokens, <|endoftext|> = {}: not the tokenizer this data set was made with; prepare it again",
                    path.display(),
                    tokenizer.vocab_size(),
                    tokenizer.eot(),
                    recorded.vocab_size,
                    recorded.eot
                )));
            }
            return Ok(Dataset {
                dir: dir.to_path_buf(),
                tokenizer,
                manifest: Some(manifest),
                llm_c_files: Vec::new(),
            });
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "bin") && p.is_file())
            .collect();
        files.sort();
        if !files
            .iter()
            .any(|p| SPLITS.iter().any(|split| names_split(p, split)))
        {
            return Err(Error::Data(format!(
                "{} is not a data set: it has no manifest.json (made by `prepare`) and no llm.c shards (.bin files named with a word train, val or test, as fineweb_train_000001.bin)",
                dir.display()
            )));
        }
        eprintln!(
            "data: {} has no manifest: reading its shards as llm.c's GPT-2 shards",
            dir.display()
        );
        Ok(Dataset {
            dir: dir.to_path_buf(),
            tokenizer: Tokenizer::gpt2()?,
            manifest: None,
            llm_c_files: files,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The tokenizer the data set was made with.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The manifest, if the data set was made by `prepare`.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// The splits that have shards: train, val, test, then any other the manifest names.
    pub fn splits_with_data(&self) -> Vec<String> {
        let mut names: Vec<String> = SPLITS.iter().map(|s| s.to_string()).collect();
        if let Some(m) = &self.manifest {
            names.extend(
                m.splits
                    .keys()
                    .filter(|k| !SPLITS.contains(&k.as_str()))
                    .cloned(),
            );
        }
        names.retain(|s| !self.shards_of(s).is_empty());
        names
    }

    /// A split's shard files, with what the manifest records of each.
    fn shards_of(&self, split: &str) -> Vec<(PathBuf, Option<&ShardInfo>)> {
        match &self.manifest {
            Some(m) => m
                .splits
                .get(split)
                .map(|s| {
                    s.shards
                        .iter()
                        .map(|info| (self.dir.join(&info.file), Some(info)))
                        .collect()
                })
                .unwrap_or_default(),
            None => self
                .llm_c_files
                .iter()
                .filter(|p| names_split(p, split))
                .map(|p| (p.clone(), None))
                .collect(),
        }
    }

    /// Opens a split's shards, checked as the module docs say. Error if the split has none,
    /// saying what would give it some.
    pub fn split(&self, name: &str) -> Result<ShardSet> {
        let shards = self.shards_of(name);
        if shards.is_empty() {
            return Err(self.no_split(name));
        }
        let paths: Vec<PathBuf> = shards.iter().map(|(p, _)| p.clone()).collect();
        let set = ShardSet::open(&paths, Some(self.tokenizer.vocab_size()))?;
        for (shard, (_, info)) in set.shards().iter().zip(&shards) {
            if let Some(wrong) = info.and_then(|info| self.recorded_mismatch(shard, info)) {
                return Err(Error::Data(format!("{wrong}; prepare the data set again")));
            }
        }
        Ok(set)
    }

    /// How a shard differs from what the manifest records of it (token count, width), if
    /// it does.
    fn recorded_mismatch(&self, shard: &Shard, info: &ShardInfo) -> Option<String> {
        let width = self.manifest.as_ref().map(|m| m.token_width);
        let what = if shard.len() as u64 != info.num_tokens {
            format!(
                "holds {} tokens but manifest.json records {}",
                shard.len(),
                info.num_tokens
            )
        } else if let Some(w) = width.filter(|&w| w != shard.width()) {
            format!(
                "holds {:?} tokens but manifest.json records {w:?}",
                shard.width()
            )
        } else {
            return None;
        };
        Some(format!(
            "{}: {what}: not the shard `prepare` wrote",
            shard.path().display()
        ))
    }

    /// The error for a split without shards, with what would help.
    fn no_split(&self, name: &str) -> Error {
        let with = self.splits_with_data();
        let with = if with.is_empty() {
            "none".to_string()
        } else {
            with.join(", ")
        };
        let advice = match &self.manifest {
            Some(m) => empty_split_advice(m, name),
            None => format!(
                "a folder of llm.c shards holds them as .bin files named with the word '{name}' (as fineweb_{name}_000000.bin)"
            ),
        };
        Error::Data(format!(
            "{} has no '{name}' data (splits with data: {with}); {advice}",
            self.dir.display()
        ))
    }

    /// Error unless `model` (a model's tokenizer, from `model_json` if known) tokenizes as
    /// the data set's tokenizer did. See [`same_tokenizer`].
    pub fn check_tokenizer(&self, model: &Tokenizer, model_json: Option<&Path>) -> Result<()> {
        same_tokenizer(&self.dir, &self.tokenizer, model, model_json)
    }

    /// Reads every shard and checks it (header, size, token ids; with a manifest, its
    /// count, width and sha256), and `tokenizer.json`'s sha256 against the manifest.
    /// `each` sees every shard's result as it comes. Error, after all are checked, if
    /// anything failed: how many, and the first.
    pub fn verify(&self, mut each: impl FnMut(&ShardCheck)) -> Result<Verified> {
        let (mut shards, mut tokens, mut problems) = (0, 0, Vec::new());
        for split in self.splits_with_data() {
            for (path, info) in self.shards_of(&split) {
                let (count, problem) = match self.verify_shard(&path, info) {
                    Ok(n) => (n, None),
                    Err(e) => (0, Some(e.to_string())),
                };
                each(&ShardCheck {
                    split: &split,
                    path: &path,
                    tokens: count,
                    problem: problem.clone(),
                });
                shards += 1;
                tokens += count;
                problems.extend(problem);
            }
        }
        let mut files = shards;
        if let Some(m) = &self.manifest {
            files += 1;
            let path = self.dir.join("tokenizer.json");
            let sha = sha256_file(&path)?;
            if sha != m.tokenizer.sha256 {
                problems.push(format!(
                    "{}: sha256 {} is not the {} manifest.json records: it changed since `prepare` wrote it",
                    path.display(),
                    short(&sha),
                    short(&m.tokenizer.sha256)
                ));
            }
        }
        match problems.as_slice() {
            [] => Ok(Verified {
                shards,
                tokens,
                sha256_checked: self.manifest.is_some(),
            }),
            [only] => Err(Error::Data(format!(
                "{only}; prepare the data set again"
            ))),
            [first, ..] => Err(Error::Data(format!(
                "{} of {files} files of {} fail verification, the first: {first}; prepare the data set again",
                problems.len(),
                self.dir.display()
            ))),
        }
    }

    /// One shard for [`Dataset::verify`]: its token count, or what is wrong.
    fn verify_shard(&self, path: &Path, info: Option<&ShardInfo>) -> Result<u64> {
        let shard = Shard::open(path, Some(self.tokenizer.vocab_size()))?;
        if let Some(info) = info {
            if let Some(wrong) = self.recorded_mismatch(&shard, info) {
                return Err(Error::Data(wrong));
            }
            let sha = sha256_file(path)?;
            if sha != info.sha256 {
                return Err(Error::Data(format!(
                    "{}: sha256 {} is not the {} manifest.json records: its tokens changed since `prepare` wrote it",
                    path.display(),
                    short(&sha),
                    short(&info.sha256)
                )));
            }
        }
        Ok(shard.len() as u64)
    }
}

/// Error unless `model` tokenizes as `data` (the tokenizer the data set at `data_dir` was
/// made with) does, compared by behaviour ([`Tokenizer::difference`]), not by bytes: the
/// message names what differs and, when `model_json` is known, how to prepare the data with
/// it.
pub fn same_tokenizer(
    data_dir: &Path,
    data: &Tokenizer,
    model: &Tokenizer,
    model_json: Option<&Path>,
) -> Result<()> {
    let Some(diff) = data.difference(model)? else {
        return Ok(());
    };
    let with = model_json.map_or("MODEL_DIR/tokenizer.json".to_string(), |p| {
        p.display().to_string()
    });
    Err(Error::Data(format!(
        "{} was tokenized with another tokenizer than the model's: {}; prepare the data with the model's tokenizer (prepare --tokenizer {with})",
        data_dir.display(),
        diff.describe("the data set's", "the model's")
    )))
}

/// What would give an empty split of a prepared data set some data. A larger fraction helps
/// only when there are several documents to share out; one document needs more text.
fn empty_split_advice(m: &Manifest, name: &str) -> String {
    let documents: u64 = m.splits.values().map(|s| s.documents).sum();
    let docs = match documents {
        1 => "1 document".to_string(),
        n => format!("{n} documents"),
    };
    let fraction = match name {
        "val" => Some(m.options.val_fraction),
        "test" => Some(m.options.test_fraction),
        _ => None,
    };
    match fraction {
        Some(f) if f <= 0.0 => format!(
            "it was prepared with --{name}-fraction 0: prepare it again with a {name} fraction above 0"
        ),
        _ if documents <= 1 => format!(
            "its text is {docs}, too little to share out: prepare it again from more text (more documents, or longer ones)"
        ),
        Some(f) => format!(
            "none of its {docs} fell to {name} at --{name}-fraction {f}: prepare it again with a larger --{name}-fraction, or from more text"
        ),
        None => format!(
            "none of its {docs} fell to {name}: prepare it again with smaller --val-fraction and --test-fraction, or from more text"
        ),
    }
}

/// Whether an llm.c shard's file name has `split` as one of its words (`fineweb_train_000001`,
/// `TinyStories-val`): not merely inside a word, so `latest_train.bin` is no test shard.
fn names_split(path: &Path, split: &str) -> bool {
    path.file_stem().is_some_and(|stem| {
        stem.to_string_lossy()
            .split(|c: char| !c.is_alphanumeric())
            .any(|word| word.eq_ignore_ascii_case(split))
    })
}

/// The first 12 hex digits of a sha256, for messages.
fn short(sha: &str) -> String {
    format!("{}…", &sha[..12.min(sha.len())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llm_c_split_names_are_whole_words() {
        let named = |name: &str, split: &str| names_split(Path::new(name), split);
        assert!(named("fineweb_train_000001.bin", "train"));
        assert!(named("edu_fineweb_val_000000.bin", "val"));
        assert!(named("TinyStories-val.bin", "val"));
        assert!(named("tiny_shakespeare_val.bin", "val"));
        assert!(!named("latest_train.bin", "test"));
        assert!(!named("interval_train_000000.bin", "val"));
        assert!(!named("trainset.bin", "train"));
    }
}
