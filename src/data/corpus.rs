//! A corpus of plain-text documents (one per file), split into training and validation
//! text by document position: the last `val_fraction` of every document is validation.
//! Splitting inside each document keeps both sets balanced across the corpus's authors and
//! styles while never sharing a line between them.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A named document.
#[derive(Clone, Debug)]
pub struct Document {
    pub name: String,
    pub text: String,
}

/// Reads a `.txt` file, or every `.txt` file in a folder (sorted by name, so the corpus is
/// the same on every machine). Invalid UTF-8 is an error naming the file.
pub fn read_documents(path: &Path) -> Result<Vec<Document>> {
    let meta = fs::metadata(path).map_err(|e| {
        Error::Data(format!(
            "corpus {}: {e}; set data.corpus to a .txt file or a folder of them",
            path.display()
        ))
    })?;
    let files: Vec<PathBuf> = if meta.is_dir() {
        let mut files: Vec<PathBuf> = fs::read_dir(path)
            .map_err(|e| Error::io(path, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "txt"))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut docs = Vec::new();
    for file in files {
        let bytes = fs::read(&file).map_err(|e| Error::io(&file, e))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            Error::Data(format!(
                "{}: not valid UTF-8 (byte {}); convert it to UTF-8",
                file.display(),
                e.utf8_error().valid_up_to()
            ))
        })?;
        let text = text.replace("\r\n", "\n");
        if !text.trim().is_empty() {
            let name = file
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            docs.push(Document { name, text });
        }
    }
    if docs.is_empty() {
        return Err(Error::Data(format!(
            "corpus {}: no non-empty .txt files found",
            path.display()
        )));
    }
    Ok(docs)
}

/// Splits every document at the line break nearest to `1 - val_fraction` of its length:
/// returns (training texts, validation texts).
pub fn split_documents(docs: &[Document], val_fraction: f64) -> (Vec<String>, Vec<String>) {
    let mut train = Vec::with_capacity(docs.len());
    let mut val = Vec::with_capacity(docs.len());
    for doc in docs {
        let target = ((doc.text.len() as f64) * (1.0 - val_fraction)) as usize;
        let cut = doc.text[..floor_char_boundary(&doc.text, target)]
            .rfind('\n')
            .map(|i| i + 1)
            .unwrap_or(0);
        let (a, b) = doc.text.split_at(cut);
        if !a.trim().is_empty() {
            train.push(a.to_string());
        }
        if !b.trim().is_empty() {
            val.push(b.to_string());
        }
    }
    (train, val)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_at_a_line_break_and_loses_nothing() {
        let doc = Document {
            name: "d".into(),
            text: "one\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\nten\n".into(),
        };
        let (train, val) = split_documents(std::slice::from_ref(&doc), 0.2);
        assert_eq!(format!("{}{}", train[0], val[0]), doc.text);
        assert!(train[0].ends_with('\n'));
        assert!(
            val[0].starts_with("nine") || val[0].starts_with("ten") || val[0].starts_with("eight")
        );
    }
}
