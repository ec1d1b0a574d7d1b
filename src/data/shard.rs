//! Token shards: a binary file of token ids, compatible with llm.c's `.bin` shards.
//!
//! # Layout
//!
//! ```text
//! offset 0     header: 256 little-endian int32 (1024 bytes)
//!                [0]  magic 20240520
//!                [1]  version: 1 = uint16 tokens (llm.c), 2 = uint32 tokens (smelt)
//!                [2]  token count (version 1: int32, >= 0, as llm.c writes it;
//!                      version 2: the low 32 bits of a u64 count)
//!                [3]  version 1: 0; version 2: the high 32 bits of the u64 count
//!                [4..256]  0 (reserved)
//! offset 1024  the tokens, little-endian: count × 2 bytes (v1) or count × 4 bytes (v2)
//! ```
//!
//! Version 1 is exactly what llm.c's `write_datafile` produces for GPT-2 (a zeroed int32
//! header with magic, version and count, then `np.uint16` tokens), so llm.c shards open
//! here and ours open there. Version 2 is our documented extension for vocabularies over
//! 65,536 ids: uint32 tokens, and a u64 count split over header ints 2 (low) and 3 (high).
//!
//! A [`Shard`] is memory-mapped, never read into RAM ([`super::mapped`]): a shard truncated
//! while a run reads it is an error naming it, not a crash. Shards are written by
//! [`ShardWriter`] to `<path>.tmp` and renamed into place once complete, so a shard that
//! exists is whole.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::mapped::MappedFile;
use crate::error::{Error, Result};

/// Header int 0 of every shard.
pub const SHARD_MAGIC: i32 = 20240520;
/// Size of the header: 256 int32.
pub const HEADER_BYTES: usize = 1024;

const HEADER_INTS: usize = HEADER_BYTES / 4;

/// How token ids are stored: uint16 (version 1) or uint32 (version 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenWidth {
    U16,
    U32,
}

impl TokenWidth {
    /// The narrowest width that holds every id of a vocabulary: uint16 up to 65,536 ids.
    pub fn for_vocab(vocab_size: usize) -> Self {
        if vocab_size <= 1 << 16 {
            TokenWidth::U16
        } else {
            TokenWidth::U32
        }
    }

    /// Bytes per token.
    pub fn bytes(self) -> usize {
        match self {
            TokenWidth::U16 => 2,
            TokenWidth::U32 => 4,
        }
    }

    /// The header version that stores tokens at this width.
    pub fn version(self) -> i32 {
        match self {
            TokenWidth::U16 => 1,
            TokenWidth::U32 => 2,
        }
    }

    fn max_token(self) -> u32 {
        match self {
            TokenWidth::U16 => u16::MAX as u32,
            TokenWidth::U32 => u32::MAX,
        }
    }

    fn max_count(self) -> u64 {
        match self {
            TokenWidth::U16 => i32::MAX as u64,
            TokenWidth::U32 => u64::MAX,
        }
    }
}

/// What a shard's header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardHeader {
    pub width: TokenWidth,
    pub num_tokens: u64,
}

fn header_int(bytes: &[u8], i: usize) -> i32 {
    i32::from_le_bytes([
        bytes[4 * i],
        bytes[4 * i + 1],
        bytes[4 * i + 2],
        bytes[4 * i + 3],
    ])
}

/// Parses and validates a header (magic, version, reserved fields). Must never panic on
/// any input (fuzzed). Bytes after the first [`HEADER_BYTES`] are ignored. The error text
/// does not name the file; callers add it.
pub fn parse_header(bytes: &[u8]) -> std::result::Result<ShardHeader, String> {
    if bytes.len() < HEADER_BYTES {
        return Err(format!(
            "{} bytes, fewer than the {HEADER_BYTES}-byte shard header: not a token shard (or truncated)",
            bytes.len()
        ));
    }
    let magic = header_int(bytes, 0);
    if magic != SHARD_MAGIC {
        return Err(format!(
            "wrong magic {magic} (expected {SHARD_MAGIC}): not a token shard"
        ));
    }
    let version = header_int(bytes, 1);
    let width = match version {
        1 => TokenWidth::U16,
        2 => TokenWidth::U32,
        v => {
            return Err(format!(
            "unsupported shard version {v} (expected 1 for uint16 tokens or 2 for uint32 tokens)"
        ))
        }
    };
    let low = header_int(bytes, 2);
    let high = header_int(bytes, 3);
    let num_tokens = match width {
        TokenWidth::U16 => {
            if low < 0 {
                return Err(format!("version 1 header has a negative token count {low}"));
            }
            if high != 0 {
                return Err(format!(
                    "version 1 header int 3 is {high} but must be 0 (reserved)"
                ));
            }
            low as u64
        }
        TokenWidth::U32 => (low as u32 as u64) | ((high as u32 as u64) << 32),
    };
    if let Some(i) = (4..HEADER_INTS).find(|&i| header_int(bytes, i) != 0) {
        return Err(format!(
            "header int {i} is {} but must be 0 (reserved)",
            header_int(bytes, i)
        ));
    }
    Ok(ShardHeader { width, num_tokens })
}

/// The header bytes for `h` (version from the width; the count split as the layout says).
pub fn encode_header(h: &ShardHeader) -> [u8; HEADER_BYTES] {
    let mut ints = [0i32; HEADER_INTS];
    ints[0] = SHARD_MAGIC;
    ints[1] = h.width.version();
    ints[2] = h.num_tokens as u32 as i32;
    ints[3] = (h.num_tokens >> 32) as u32 as i32;
    let mut out = [0u8; HEADER_BYTES];
    for (chunk, v) in out.chunks_exact_mut(4).zip(ints) {
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    out
}

/// A written shard, as recorded in a manifest.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ShardInfo {
    /// File name only (no directory).
    pub file: String,
    pub num_tokens: u64,
    /// SHA-256 of the whole file, lowercase hex.
    pub sha256: String,
}

/// Writes a shard to `<path>.tmp`, renames to `path` in `finish`; dropping an unfinished
/// writer removes the temp file (nothing half-written is left).
pub struct ShardWriter {
    path: PathBuf,
    tmp: PathBuf,
    width: TokenWidth,
    num_tokens: u64,
    out: Option<BufWriter<File>>,
    scratch: Vec<u8>,
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(".tmp");
    PathBuf::from(s)
}

impl ShardWriter {
    /// Creates `<path>.tmp` (replacing any stale one) and writes a provisional header.
    pub fn create(path: &Path, width: TokenWidth) -> Result<Self> {
        let tmp = tmp_path(path);
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut writer = ShardWriter {
            path: path.to_path_buf(),
            tmp,
            width,
            num_tokens: 0,
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            scratch: Vec::new(),
        };
        let header = encode_header(&ShardHeader {
            width,
            num_tokens: 0,
        });
        writer.write_bytes(&header)?;
        Ok(writer)
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let out = self.out.as_mut().ok_or_else(|| {
            Error::Data(format!(
                "{}: shard writer already closed",
                self.tmp.display()
            ))
        })?;
        out.write_all(bytes).map_err(|e| Error::io(&self.tmp, e))
    }

    /// Appends tokens. Error (and nothing written) if a token does not fit the width or the
    /// count would exceed what the header can hold.
    pub fn write_tokens(&mut self, tokens: &[u32]) -> Result<()> {
        let max = self.width.max_token();
        if let Some(i) = tokens.iter().position(|&t| t > max) {
            return Err(Error::Data(format!(
                "{}: token id {} at position {} does not fit a uint16 shard (ids <= 65535); use TokenWidth::U32 for vocabularies over 65,536",
                self.path.display(),
                tokens[i],
                self.num_tokens + i as u64
            )));
        }
        let total = self.num_tokens.checked_add(tokens.len() as u64);
        if total.is_none_or(|n| n > self.width.max_count()) {
            return Err(Error::Data(format!(
                "{}: {} + {} tokens exceed the {} tokens a version {} shard can count; split the data over more shards",
                self.path.display(),
                self.num_tokens,
                tokens.len(),
                self.width.max_count(),
                self.width.version()
            )));
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        match self.width {
            TokenWidth::U16 => {
                scratch.reserve(tokens.len() * 2);
                for &t in tokens {
                    scratch.extend_from_slice(&(t as u16).to_le_bytes());
                }
            }
            TokenWidth::U32 => {
                scratch.reserve(tokens.len() * 4);
                for &t in tokens {
                    scratch.extend_from_slice(&t.to_le_bytes());
                }
            }
        }
        let written = self.write_bytes(&scratch);
        self.scratch = scratch;
        written?;
        self.num_tokens += tokens.len() as u64;
        Ok(())
    }

    /// Tokens written so far.
    pub fn num_tokens(&self) -> u64 {
        self.num_tokens
    }

    /// Rewrites the header count, fsyncs, renames `<path>.tmp` to `path`, and returns the
    /// file name, count and SHA-256 of the final file.
    pub fn finish(mut self) -> Result<ShardInfo> {
        let out = self.out.take().ok_or_else(|| {
            Error::Data(format!(
                "{}: shard writer already closed",
                self.tmp.display()
            ))
        })?;
        let tmp = self.tmp.clone();
        let mut file = out
            .into_inner()
            .map_err(|e| Error::io(&tmp, e.into_error()))?;
        let header = encode_header(&ShardHeader {
            width: self.width,
            num_tokens: self.num_tokens,
        });
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(&header))
            .and_then(|_| file.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        drop(file);
        fs::rename(&tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        // Make the rename itself durable (best effort: not every platform can open a
        // directory for syncing).
        if let Some(dir) = self.path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        let sha256 = sha256_file(&self.path)?;
        let file = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(ShardInfo {
            file,
            num_tokens: self.num_tokens,
            sha256,
        })
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        if let Some(out) = self.out.take() {
            // Unfinished: discard the partial file.
            drop(out);
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// SHA-256 of a file's bytes, lowercase hex (streamed, 1 MiB at a time).
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, e)),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// An open shard: its tokens through a memory map (see the module docs).
pub struct Shard {
    path: PathBuf,
    width: TokenWidth,
    len: usize,
    map: MappedFile,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("path", &self.path)
            .field("width", &self.width)
            .field("len", &self.len)
            .finish()
    }
}

impl Shard {
    /// Opens and validates: magic, version, file size = header + count·width (a truncated
    /// file and a count disagreeing with the size are distinct errors), and, when
    /// `vocab_size` is Some, that every token id < vocab_size (a scan of the file; the error
    /// names the first bad id and its position).
    pub fn open(path: &Path, vocab_size: Option<usize>) -> Result<Self> {
        let p = path.display();
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            return Err(Error::Data(format!(
                "{p}: is a directory, not a token shard"
            )));
        }
        let size = meta.len();
        if size < HEADER_BYTES as u64 {
            return Err(Error::Data(format!(
                "{p}: the file has {size} bytes, fewer than the {HEADER_BYTES}-byte shard header: not a token shard (or truncated)"
            )));
        }
        let map = MappedFile::new(path, file)?;
        let header = parse_header(map.read(0, HEADER_BYTES)?)
            .map_err(|e| Error::Data(format!("{p}: {e}")))?;
        let have = size - HEADER_BYTES as u64;
        let want = header.num_tokens as u128 * header.width.bytes() as u128;
        if (have as u128) < want {
            return Err(Error::Data(format!(
                "{p}: truncated: header says {} tokens ({want} bytes) but the file has {have} bytes of tokens",
                header.num_tokens
            )));
        }
        if (have as u128) > want {
            return Err(Error::Data(format!(
                "{p}: size disagrees with the header: header says {} tokens ({want} bytes) but the file has {have} bytes of tokens ({} bytes too many)",
                header.num_tokens,
                have as u128 - want
            )));
        }
        let len = usize::try_from(header.num_tokens).map_err(|_| {
            Error::Data(format!(
                "{p}: {} tokens do not fit this platform's address space",
                header.num_tokens
            ))
        })?;
        let shard = Shard {
            path: path.to_path_buf(),
            width: header.width,
            len,
            map,
        };
        if let Some(vocab) = vocab_size {
            if let Some((pos, id)) = shard.first_id_at_least(vocab)? {
                return Err(Error::Data(format!(
                    "{p}: token id {id} at position {pos} is >= the vocabulary size {vocab}"
                )));
            }
        }
        Ok(shard)
    }

    /// The first (position, id) with id >= limit: a vectorizable max per block, then a
    /// search inside the first block that has one.
    fn first_id_at_least(&self, limit: usize) -> Result<Option<(usize, u32)>> {
        if limit > self.width.max_token() as usize {
            return Ok(None);
        }
        const BLOCK: usize = 1 << 16;
        let mut start = 0;
        let mut buf = Vec::with_capacity(BLOCK);
        while start < self.len {
            let n = BLOCK.min(self.len - start);
            buf.clear();
            self.read_into(start, n, &mut buf)?;
            let max = buf.iter().copied().max().unwrap_or(0);
            if max as usize >= limit {
                let i = buf.iter().position(|&t| t as usize >= limit);
                return Ok(i.map(|i| (start + i, buf[i])));
            }
            start += n;
        }
        Ok(None)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn width(&self) -> TokenWidth {
        self.width
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Token `i` (panics if `i >= len()`, a caller bug). Error if the file no longer holds
    /// it (see [`Shard::read_into`]).
    pub fn token(&self, i: usize) -> Result<u32> {
        assert!(
            i < self.len,
            "token {i} out of range for {} tokens",
            self.len
        );
        let mut one = Vec::with_capacity(1);
        self.read_into(i, 1, &mut one)?;
        Ok(one[0])
    }

    /// Appends tokens [start, start+len) to out (panics only on out-of-range indices, a
    /// caller bug). Error, naming the shard, if the file has been truncated since it was
    /// opened so that it no longer holds them.
    pub fn read_into(&self, start: usize, len: usize, out: &mut Vec<u32>) -> Result<()> {
        start
            .checked_add(len)
            .filter(|&e| e <= self.len)
            .unwrap_or_else(|| {
                panic!(
                    "tokens [{start}, {start}+{len}) out of range for {} tokens",
                    self.len
                )
            });
        let w = self.width.bytes();
        let bytes = self.map.read(HEADER_BYTES + start * w, len * w)?;
        out.reserve(len);
        match self.width {
            TokenWidth::U16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32),
            ),
            TokenWidth::U32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
        }
        Ok(())
    }
}
