//! The `__shared__` declarations of a kernel file, rewritten for the emulation's sanitizer.
//!
//! g++ never instruments an access to a `thread_local` variable at a constant offset (`s[0]`,
//! a scalar `__shared__ float mean`), and the emulation's `__shared__` is `thread_local`. So
//! build.rs compiles a copy of every kernel file in which each `__shared__` variable of a
//! function is reached through a reference the compiler cannot see through, whose accesses it
//! instruments like any other:
//!
//! ```text
//! __shared__ float part[32];  ->  static thread_local float part__smelt_shared[32]; auto& part = *::smelt_emu::opaque(&part__smelt_shared);
//! ```
//!
//! Dynamic shared memory is `smem` (common.cuh, convention 4), which cuda_emu.h defines as the
//! runtime's pointer: a file's own `extern __shared__ ... smem[];` is dropped, anywhere.
//!
//! Each declaration stays on its line (line numbers are unchanged, and the copy starts with a
//! `#line` naming the original). Static declarations outside functions are left as they are;
//! one variable per declaration and no initialiser (CUDA allows none on `__shared__`).

/// `source` with its `__shared__` declarations rewritten; an error names the line of one it
/// cannot rewrite.
pub fn rewrite(source: &str) -> Result<String, String> {
    let bytes = source.as_bytes();
    let mut out = String::with_capacity(source.len() + 256);
    let mut copied = 0; // source[..copied] is in `out`
    let mut depth = 0usize; // brace depth
    let mut statement_start = 0; // where the current statement began
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if matches!(bytes.get(i + 1), Some(b'/' | b'*')) => {
                let end = if bytes[i + 1] == b'/' {
                    source[i..].find('\n').map_or(bytes.len(), |n| i + n)
                } else {
                    source[i + 2..]
                        .find("*/")
                        .map_or(bytes.len(), |n| i + 2 + n + 2)
                };
                // A comment before a statement is not part of it.
                if source[statement_start..i].trim().is_empty() {
                    statement_start = end;
                }
                i = end;
                continue;
            }
            b'"' | b'\'' => {
                i = skip_literal(bytes, i);
                continue;
            }
            b'#' if line_start(bytes, i) => {
                // A preprocessor line is a statement of its own.
                i = source[i..].find('\n').map_or(bytes.len(), |n| i + n);
                statement_start = i;
                continue;
            }
            b'{' => {
                depth += 1;
                statement_start = i + 1;
            }
            b'}' => {
                depth = depth.saturating_sub(1);
                statement_start = i + 1;
            }
            b';' => statement_start = i + 1,
            c if is_ident(c) && (i == 0 || !is_ident(bytes[i - 1])) => {
                let end = i + source[i..].bytes().take_while(|&c| is_ident(c)).count();
                if &source[i..end] == "__shared__"
                    && (depth > 0 || source[statement_start..i].trim() == "extern")
                {
                    let semicolon = source[end..]
                        .find(';')
                        .map(|n| end + n)
                        .ok_or_else(|| error(source, i, "no ';' after __shared__"))?;
                    let head = source[statement_start..i].trim();
                    let dynamic = match head {
                        "" => false,
                        "extern" => true,
                        _ => return Err(error(source, i, "__shared__ must start its declaration")),
                    };
                    let decl = &source[end..semicolon];
                    let text = declaration(dynamic, decl).map_err(|e| error(source, i, &e))?;
                    let span = &source[statement_start..=semicolon];
                    let lead = span.len() - span.trim_start().len();
                    out.push_str(&source[copied..statement_start + lead]);
                    out.push_str(&text);
                    out.push_str(&"\n".repeat(span[lead..].matches('\n').count()));
                    copied = semicolon + 1;
                    i = semicolon + 1;
                    statement_start = i;
                    continue;
                }
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out.push_str(&source[copied..]);
    Ok(out)
}

/// The replacement of `__shared__ <decl>;` (`decl` without the keyword and the ';').
fn declaration(dynamic: bool, decl: &str) -> Result<String, String> {
    if decl.contains('=') || decl.contains(',') {
        return Err("one variable per __shared__ declaration, without initialiser".into());
    }
    let (before, dims) = match decl.find('[') {
        Some(at) => (&decl[..at], decl[at..].trim()),
        None => (decl, ""),
    };
    let before = before.trim_end();
    let name_len = before.bytes().rev().take_while(|&c| is_ident(c)).count();
    let (ty, name) = before.split_at(before.len() - name_len);
    let ty = ty.trim();
    if name.is_empty() || ty.is_empty() {
        return Err("cannot find the type and name of this __shared__ variable".into());
    }
    if dynamic {
        if dims != "[]" || name != "smem" {
            return Err("dynamic shared memory is `extern __shared__ T smem[];`".into());
        }
        return Ok(String::new());
    }
    Ok(format!(
        "static thread_local {ty} {name}__smelt_shared{dims}; \
         auto& {name} = *::smelt_emu::opaque(&{name}__smelt_shared);"
    ))
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Whether only blanks precede `at` on its line.
fn line_start(bytes: &[u8], at: usize) -> bool {
    bytes[..at]
        .iter()
        .rev()
        .take_while(|&&c| c != b'\n')
        .all(|c| c.is_ascii_whitespace())
}

/// The index after the string or character literal starting at `at`.
fn skip_literal(bytes: &[u8], at: usize) -> usize {
    let quote = bytes[at];
    let mut i = at + 1;
    while i < bytes.len() && bytes[i] != quote {
        i += if bytes[i] == b'\\' { 2 } else { 1 };
    }
    i + 1
}

fn error(source: &str, at: usize, what: &str) -> String {
    let line = source[..at].matches('\n').count() + 1;
    format!("line {line}: {what}")
}
