//! Input files of the `prepare` pipeline: finding them ([`discover`]) and streaming their
//! documents ([`read_pieces`]) as pieces (see [`crate::data::pieces`]), so memory stays
//! bounded whatever the size of the corpus and of any one document in it.
//!
//! Formats, chosen by the file name (ASCII case ignored):
//!
//! - `.txt`, `.txt.gz`: the whole file is one document, of any size. A file longer than one
//!   piece is read twice: first to check that it is UTF-8 and not only whitespace (so a bad
//!   file is skipped whole, or fails, before any of it is used), then piece by piece.
//! - `.jsonl`, `.jsonl.gz`: one JSON object per line; the document is the string in
//!   [`SourceOptions::text_field`] (a missing or non-string field: skipped, as below).
//!   Blank lines are skipped; a leading byte order mark on a line is ignored. Line numbers
//!   in messages count from 1, blank lines included. A line is held whole (it must be parsed
//!   whole), so it is bounded by `max_document_bytes`; its document is then passed on in
//!   pieces like any other.
//!
//! `.gz` files are decompressed on the fly (concatenated gzip members are read as one
//! stream). Memory: one piece of a `.txt` file (plus read buffers); a `.jsonl` line and its
//! parsed text. A `.jsonl` line longer than `max_document_bytes` is skipped (and counted) or
//! is an error, as [`SourceOptions::on_invalid`] says. The same holds for invalid UTF-8,
//! malformed JSON lines and records without a string text field. I/O and decompression
//! errors are always errors.

use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use super::pieces::{self, DEFAULT_PIECE_BYTES};
use crate::error::{Error, Result};

/// How a file's bytes become documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// The whole file is one document.
    Txt,
    /// One JSON object per line, the document in a string field.
    Jsonl,
}

/// One input file, as found by [`discover`].
#[derive(Clone, Debug, PartialEq)]
pub struct SourceFile {
    pub path: PathBuf,
    pub kind: SourceKind,
    /// The file is gzip-compressed (`.gz`).
    pub gzip: bool,
    /// Bytes on disk (compressed size for `.gz`), when discovered.
    pub size: u64,
}

/// What to do with input that cannot be used: invalid UTF-8, malformed JSON lines, records
/// without the text field, documents over `max_document_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnInvalid {
    /// Skip it and count it in [`SourceStats`].
    Skip,
    /// Stop with an error naming the file (and line).
    Fail,
}

/// How documents are read.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceOptions {
    /// The JSONL field that holds the document's text.
    pub text_field: String,
    pub on_invalid: OnInvalid,
    /// Largest `.jsonl` line accepted, in (uncompressed) bytes: a line is held whole.
    /// (`.txt` files stream in pieces, whatever their size.)
    pub max_document_bytes: usize,
    /// Documents are passed on in pieces of about this many bytes
    /// ([`crate::data::pieces`]).
    pub piece_bytes: usize,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            text_field: "text".to_string(),
            on_invalid: OnInvalid::Skip,
            max_document_bytes: 256 << 20,
            piece_bytes: DEFAULT_PIECE_BYTES,
        }
    }
}

/// One piece of a document: a document is the concatenation of its pieces, which come in
/// order.
#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    pub text: String,
    /// Its place in the document: 0 starts a document.
    pub index: u64,
    /// It is the document's last piece.
    pub last: bool,
}

/// Counters over every file read with the same `SourceStats`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SourceStats {
    /// Files opened.
    pub files: u64,
    /// Documents passed to the sink.
    pub documents: u64,
    /// Pieces passed to the sink (a document is one piece or more).
    #[serde(default)]
    pub pieces: u64,
    /// Uncompressed bytes read (for JSONL: whole lines, JSON syntax included).
    pub bytes: u64,
    pub skipped_invalid_utf8: u64,
    pub skipped_bad_json: u64,
    pub skipped_missing_field: u64,
    pub skipped_too_large: u64,
}

/// How often (in on-disk bytes) `progress` is called at least.
const PROGRESS_STEP: u64 = 64 << 10;
/// Read buffer size.
const BUF_SIZE: usize = 64 << 10;
/// A `.jsonl` line buffer grown past this is freed after the line is parsed.
const LARGE_LINE: usize = 1 << 20;

const EXTENSIONS: &str = ".txt, .jsonl, .txt.gz or .jsonl.gz";

/// The kind and compression of a file, from its name; `None` if it is not an input file.
fn classify(path: &Path) -> Option<(SourceKind, bool)> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    let (stem, gzip) = match name.strip_suffix(".gz") {
        Some(stem) => (stem, true),
        None => (name.as_str(), false),
    };
    let kind = if stem.ends_with(".txt") {
        SourceKind::Txt
    } else if stem.ends_with(".jsonl") {
        SourceKind::Jsonl
    } else {
        return None;
    };
    Some((kind, gzip))
}

/// Expands inputs: a file is taken as is (error if its extension is not .txt/.jsonl/.txt.gz/
/// .jsonl.gz, or it does not exist/is unreadable); a folder is walked recursively (following
/// symbolic links, each folder once), taking files with those extensions (others ignored),
/// sorted by path so the order is the same on every machine. Inputs keep their order; a file
/// reached twice is listed once, where it is first reached. Error if nothing is found.
pub fn discover(inputs: &[PathBuf]) -> Result<Vec<SourceFile>> {
    if inputs.is_empty() {
        return Err(Error::Data(
            "no inputs given; name .txt/.jsonl(.gz) files or folders of them".to_string(),
        ));
    }
    let mut out = Vec::new();
    let mut seen_files = HashSet::new();
    for input in inputs {
        let meta = fs::metadata(input)
            .map_err(|e| Error::Data(format!("input {}: {e}", input.display())))?;
        let mut found = Vec::new();
        if meta.is_dir() {
            let mut seen_dirs = HashSet::new();
            walk(input, &mut seen_dirs, &mut found)?;
            found.sort_by(|a: &SourceFile, b| a.path.cmp(&b.path));
        } else {
            let Some((kind, gzip)) = classify(input) else {
                return Err(Error::Data(format!(
                    "input {}: not a {EXTENSIONS} file",
                    input.display()
                )));
            };
            File::open(input)
                .map_err(|e| Error::Data(format!("input {}: {e}", input.display())))?;
            found.push(SourceFile {
                path: input.clone(),
                kind,
                gzip,
                size: meta.len(),
            });
        }
        for file in found {
            let key = fs::canonicalize(&file.path).unwrap_or_else(|_| file.path.clone());
            if seen_files.insert(key) {
                out.push(file);
            }
        }
    }
    if out.is_empty() {
        let names: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
        return Err(Error::Data(format!(
            "no {EXTENSIONS} files found in {}",
            names.join(", ")
        )));
    }
    Ok(out)
}

/// Collects the input files under `dir`, unsorted.
fn walk(dir: &Path, seen: &mut HashSet<PathBuf>, out: &mut Vec<SourceFile>) -> Result<()> {
    let key = fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
    if !seen.insert(key) {
        return Ok(()); // a symbolic link back to a folder already walked
    }
    let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let mut file_type = entry.file_type().map_err(|e| Error::io(&path, e))?;
        let mut meta = None;
        if file_type.is_symlink() {
            match fs::metadata(&path) {
                Ok(m) => {
                    file_type = m.file_type();
                    meta = Some(m);
                }
                // A dangling link is only an error where it names an input file.
                Err(e) if classify(&path).is_some() => return Err(Error::io(&path, e)),
                Err(_) => continue,
            }
        }
        if file_type.is_dir() {
            walk(&path, seen, out)?;
        } else if let Some((kind, gzip)) = classify(&path) {
            let meta = match meta {
                Some(m) => m,
                None => entry.metadata().map_err(|e| Error::io(&path, e))?,
            };
            out.push(SourceFile {
                path,
                kind,
                gzip,
                size: meta.len(),
            });
        }
    }
    Ok(())
}

/// Counts the bytes read through it into a shared cell (read by the progress reporter
/// while a decoder owns the reader).
struct CountingReader<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Calls `progress` with the on-disk bytes consumed since the last call.
struct Progress<'a> {
    count: Rc<Cell<u64>>,
    reported: u64,
    callback: &'a mut dyn FnMut(u64),
}

impl Progress<'_> {
    fn tick(&mut self) {
        let now = self.count.get();
        if now >= self.reported + PROGRESS_STEP {
            (self.callback)(now - self.reported);
            self.reported = now;
        }
    }

    /// Reports everything up to `total` on-disk bytes.
    fn finish(&mut self, total: u64) {
        if total > self.reported {
            (self.callback)(total - self.reported);
            self.reported = total;
        }
    }
}

/// Streams the documents of one file to `sink` as pieces, in order: a .txt file is ONE
/// document (its whole text, skipped if it is only whitespace); a .jsonl file is one document
/// per non-blank line, the string in `text_field`. gzip is decompressed on the fly.
/// `progress` is called with the number of on-disk (compressed, for .gz) bytes consumed since
/// the last call, every 64 KiB or so and once at the end; after a complete read the calls
/// sum to the file's size. `sink` returning `Break` stops reading the file (where it is);
/// returning an error stops reading and propagates it.
pub fn read_pieces(
    file: &SourceFile,
    opts: &SourceOptions,
    stats: &mut SourceStats,
    progress: &mut dyn FnMut(u64),
    sink: &mut dyn FnMut(Piece) -> Result<ControlFlow<()>>,
) -> Result<()> {
    let count = Rc::new(Cell::new(0u64));
    let reader = Reader::open(file, &count)?;
    stats.files += 1;
    let mut progress = Progress {
        count,
        reported: 0,
        callback: progress,
    };
    let mut out = Out { stats, sink };
    match file.kind {
        SourceKind::Txt => read_txt(file, reader, opts, &mut progress, &mut out),
        SourceKind::Jsonl => read_jsonl(reader, opts, &mut progress, &mut out),
    }
}

/// Where the pieces of a file go, counted.
struct Out<'a> {
    stats: &'a mut SourceStats,
    sink: &'a mut dyn FnMut(Piece) -> Result<ControlFlow<()>>,
}

impl Out<'_> {
    fn send(&mut self, piece: Piece) -> Result<ControlFlow<()>> {
        self.stats.pieces += 1;
        self.stats.documents += u64::from(piece.index == 0);
        (self.sink)(piece)
    }

    /// Sends a document held whole in memory, in pieces (itself, if it is one).
    fn send_whole(&mut self, doc: String, budget: usize) -> Result<ControlFlow<()>> {
        if pieces::first_piece_len(&doc, budget) == doc.len() {
            return self.send(Piece {
                text: doc,
                index: 0,
                last: true,
            });
        }
        let parts: Vec<&str> = pieces::pieces(&doc, budget).collect();
        for (i, part) in parts.iter().enumerate() {
            let piece = Piece {
                text: part.to_string(),
                index: i as u64,
                last: i + 1 == parts.len(),
            };
            if self.send(piece)?.is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    }
}

/// The decoded byte stream of one file, with its name for error messages.
struct Reader<'a> {
    path: &'a Path,
    gzip: bool,
    inner: Box<dyn BufRead>,
}

impl<'a> Reader<'a> {
    /// Opens `file`, counting the on-disk bytes read into `count`.
    fn open(file: &'a SourceFile, count: &Rc<Cell<u64>>) -> Result<Self> {
        let path = &file.path;
        let raw = File::open(path).map_err(|e| Error::io(path, e))?;
        let counting = CountingReader {
            inner: raw,
            count: Rc::clone(count),
        };
        let inner: Box<dyn BufRead> = if file.gzip {
            Box::new(BufReader::with_capacity(
                BUF_SIZE,
                flate2::read::MultiGzDecoder::new(BufReader::with_capacity(BUF_SIZE, counting)),
            ))
        } else {
            Box::new(BufReader::with_capacity(BUF_SIZE, counting))
        };
        Ok(Reader {
            path,
            gzip: file.gzip,
            inner,
        })
    }

    /// An I/O or decompression error, as one line naming the file (and line).
    fn error(&self, line: Option<u64>, e: io::Error) -> Error {
        let what = if self.gzip { "reading gzip: " } else { "" };
        match line {
            Some(n) => Error::Data(format!("{}: line {n}: {what}{e}", self.path.display())),
            None => Error::Data(format!("{}: {what}{e}", self.path.display())),
        }
    }

    /// Reads until `buf` holds `want` bytes or the stream ends; whether it ended. `bytes`
    /// counts what was read.
    fn fill(&mut self, buf: &mut Vec<u8>, want: usize, bytes: &mut u64) -> Result<bool> {
        while buf.len() < want {
            let chunk = match self.inner.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.error(None, e)),
            };
            if chunk.is_empty() {
                return Ok(true);
            }
            let take = chunk.len().min(want - buf.len());
            buf.extend_from_slice(&chunk[..take]);
            self.inner.consume(take);
            *bytes += take as u64;
        }
        Ok(false)
    }
}

/// What the first read of a `.txt` file longer than one piece found.
struct Checked {
    bytes: u64,
    /// Where the first invalid UTF-8 is, if any.
    invalid_at: Option<u64>,
    /// Something other than whitespace is in it.
    has_text: bool,
}

/// Reads the rest of a stream whose first bytes are `head`, checking UTF-8 and looking for
/// text other than whitespace; holds no more than a read buffer.
fn check_txt(r: &mut Reader<'_>, head: &[u8], read: &mut u64) -> Result<Checked> {
    let mut pending = head.to_vec(); // bytes not checked yet, starting at file offset `at`
    let mut at = 0u64;
    let mut has_text = false;
    loop {
        let valid = match std::str::from_utf8(&pending) {
            Ok(s) => s,
            Err(e) if e.error_len().is_some() => {
                return Ok(Checked {
                    bytes: at + pending.len() as u64,
                    invalid_at: Some(at + e.valid_up_to() as u64),
                    has_text,
                })
            }
            // A character cut by the end of the buffer: checked with the next bytes.
            Err(e) => std::str::from_utf8(&pending[..e.valid_up_to()]).expect("valid prefix"),
        };
        has_text = has_text || !valid.trim().is_empty();
        let done = valid.len();
        at += done as u64;
        pending.drain(..done);
        let before = pending.len();
        if r.fill(&mut pending, before + BUF_SIZE, read)? && pending.len() == before {
            break;
        }
    }
    Ok(Checked {
        bytes: at + pending.len() as u64,
        invalid_at: (!pending.is_empty()).then_some(at), // a character cut by the end
        has_text,
    })
}

fn read_txt(
    file: &SourceFile,
    mut r: Reader<'_>,
    opts: &SourceOptions,
    progress: &mut Progress<'_>,
    out: &mut Out<'_>,
) -> Result<()> {
    let budget = opts.piece_bytes;
    let view = pieces::view_len(budget);
    let path = &file.path;
    let mut buf = Vec::new();
    let mut read = 0u64;
    let whole = r.fill(&mut buf, view, &mut read)?;
    let invalid = |stats: &mut SourceStats, offset: u64| {
        if opts.on_invalid == OnInvalid::Fail {
            return Err(Error::Data(format!(
                "{}: invalid UTF-8 at byte {offset}",
                path.display()
            )));
        }
        stats.skipped_invalid_utf8 += 1;
        Ok(())
    };
    if whole {
        // The file is no longer than the view: one piece, or a few cut from the buffer.
        out.stats.bytes += read;
        progress.finish(progress.count.get());
        let text = match String::from_utf8(buf) {
            Ok(text) => text,
            Err(e) => return invalid(out.stats, e.utf8_error().valid_up_to() as u64),
        };
        if !text.trim().is_empty() {
            let _ = out.send_whole(text, budget)?; // the file ends here: nothing to stop
        }
        return Ok(());
    }

    // Longer: check it all first, then read it again piece by piece.
    let checked = check_txt(&mut r, &buf, &mut read)?;
    if checked.invalid_at.is_some() || !checked.has_text {
        out.stats.bytes += read;
        progress.finish(progress.count.get());
        return match checked.invalid_at {
            Some(offset) => invalid(out.stats, offset),
            None => Ok(()),
        };
    }
    drop(r);
    progress.count.set(0);
    let mut r = Reader::open(file, &progress.count)?;
    let changed = || {
        Error::Data(format!(
            "{}: the file changed while it was read",
            path.display()
        ))
    };
    buf.clear();
    read = 0;
    let mut index = 0;
    loop {
        let end = r.fill(&mut buf, view, &mut read)?;
        progress.tick();
        if end && read != checked.bytes {
            return Err(changed());
        }
        let text = match std::str::from_utf8(&buf) {
            Ok(text) => text,
            Err(e) if e.error_len().is_none() && !end => {
                std::str::from_utf8(&buf[..e.valid_up_to()]).expect("valid prefix")
            }
            Err(_) => return Err(changed()),
        };
        let n = pieces::first_piece_len(text, budget);
        let last = end && n == text.len();
        let flow = out.send(Piece {
            text: text[..n].to_string(),
            index,
            last,
        })?;
        if last || flow.is_break() {
            break;
        }
        buf.drain(..n);
        index += 1;
    }
    out.stats.bytes += read;
    progress.finish(progress.count.get());
    Ok(())
}

/// One line read with a length bound.
enum Line {
    Eof,
    /// The line is in the buffer, without its `\n`.
    Ok,
    /// The line was longer than the bound; it has been read past and dropped.
    TooLong,
}

/// Reads one line into `buf` (cleared first), holding at most `max + 1` bytes of it;
/// `bytes` gets the number of bytes consumed.
fn read_line_bounded(
    r: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    max: usize,
    bytes: &mut u64,
) -> io::Result<Line> {
    buf.clear();
    let limit = (max as u64).saturating_add(1);
    let n = Read::take(&mut *r, limit).read_until(b'\n', buf)?;
    *bytes += n as u64;
    if n == 0 {
        return Ok(Line::Eof);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        return Ok(Line::Ok);
    }
    if (buf.len() as u64) < limit {
        return Ok(Line::Ok); // the last line, without a newline
    }
    // Too long: skip to the end of the line, a buffer at a time.
    buf.clear();
    loop {
        let (done, used) = {
            let avail = match r.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                (true, 0)
            } else {
                match avail.iter().position(|&b| b == b'\n') {
                    Some(i) => (true, i + 1),
                    None => (false, avail.len()),
                }
            }
        };
        r.consume(used);
        *bytes += used as u64;
        if done {
            return Ok(Line::TooLong);
        }
    }
}

fn read_jsonl(
    mut r: Reader<'_>,
    opts: &SourceOptions,
    progress: &mut Progress<'_>,
    out: &mut Out<'_>,
) -> Result<()> {
    let fail = opts.on_invalid == OnInvalid::Fail;
    let field = opts.text_field.as_str();
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        line_no += 1;
        let line = read_line_bounded(
            r.inner.as_mut(),
            &mut buf,
            opts.max_document_bytes,
            &mut out.stats.bytes,
        )
        .map_err(|e| r.error(Some(line_no), e))?;
        progress.tick();
        let here = || format!("{}: line {line_no}", r.path.display());
        match line {
            Line::Eof => break,
            Line::TooLong => {
                if fail {
                    return Err(Error::Data(format!(
                        "{}: longer than max_document_bytes ({} bytes)",
                        here(),
                        opts.max_document_bytes
                    )));
                }
                out.stats.skipped_too_large += 1;
                continue;
            }
            Line::Ok => {}
        }
        let text = match std::str::from_utf8(&buf) {
            Ok(t) => t,
            Err(e) => {
                if fail {
                    return Err(Error::Data(format!(
                        "{}: invalid UTF-8 at byte {} of the line",
                        here(),
                        e.valid_up_to()
                    )));
                }
                out.stats.skipped_invalid_utf8 += 1;
                continue;
            }
        };
        // A byte order mark (Windows tools write one at the start of a file) is not JSON.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.trim_ascii().is_empty() {
            continue;
        }
        match parse_record(text, field) {
            Ok(Field::Text(doc)) => {
                if buf.capacity() > LARGE_LINE {
                    buf = Vec::new(); // not held beside the document's pieces
                }
                if out.send_whole(doc, opts.piece_bytes)?.is_break() {
                    break;
                }
            }
            Ok(Field::Missing) => {
                if fail {
                    return Err(Error::Data(format!(
                        "{}: no \"{field}\" field (set text_field to the field that holds the text)",
                        here()
                    )));
                }
                out.stats.skipped_missing_field += 1;
            }
            Ok(Field::NotString(kind)) => {
                if fail {
                    return Err(Error::Data(format!(
                        "{}: field \"{field}\" is {kind}, not a string",
                        here()
                    )));
                }
                out.stats.skipped_missing_field += 1;
            }
            Err(e) => {
                if fail {
                    return Err(Error::Data(format!("{}: {e}", here())));
                }
                out.stats.skipped_bad_json += 1;
            }
        }
    }
    progress.finish(progress.count.get());
    Ok(())
}

/// What a JSONL record holds in the text field.
enum Field {
    Text(String),
    Missing,
    NotString(&'static str),
}

/// Parses one JSONL line, keeping only `field` (the last one, if repeated). The error is a
/// one-line description of malformed JSON or a record that is not an object.
fn parse_record(line: &str, field: &str) -> std::result::Result<Field, String> {
    let mut de = serde_json::Deserializer::from_str(line);
    let describe = |e: serde_json::Error| {
        let msg = e.to_string();
        let msg = match msg.rsplit_once(" at line ") {
            Some((m, _)) => m.to_string(),
            None => msg,
        };
        format!("malformed JSON at column {}: {msg}", e.column())
    };
    let found = RecordSeed { field }
        .deserialize(&mut de)
        .map_err(describe)?;
    de.end().map_err(describe)?;
    Ok(found)
}

struct RecordSeed<'f> {
    field: &'f str,
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_> {
    type Value = Field;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<Field, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_> {
    type Value = Field;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Field, A::Error> {
        let mut found = Field::Missing;
        while let Some(is_field) = map.next_key_seed(KeySeed { field: self.field })? {
            if is_field {
                found = match map.next_value::<serde_json::Value>()? {
                    serde_json::Value::String(s) => Field::Text(s),
                    serde_json::Value::Null => Field::NotString("null"),
                    serde_json::Value::Bool(_) => Field::NotString("a boolean"),
                    serde_json::Value::Number(_) => Field::NotString("a number"),
                    serde_json::Value::Array(_) => Field::NotString("an array"),
                    serde_json::Value::Object(_) => Field::NotString("an object"),
                };
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Compares a key with the text field without allocating it.
struct KeySeed<'f> {
    field: &'f str,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> std::result::Result<bool, E> {
        Ok(key == self.field)
    }
}
