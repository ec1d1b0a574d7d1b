//! The names of the kernels a `.cu` file defines: every `extern "C" __global__ void NAME(`
//! outside comments, with an optional `__launch_bounds__(...)` before the name. build.rs lists
//! them in the emulation's kernel table, so kernel files carry no export lines.

/// The kernel names in `source`, in order.
pub fn kernel_names(source: &str) -> Vec<String> {
    let code = strip_comments(source);
    let mut names = Vec::new();
    let mut rest = code.as_str();
    const HEAD: &str = "extern \"C\" __global__";
    while let Some(at) = rest.find(HEAD) {
        rest = &rest[at + HEAD.len()..];
        let mut s = rest.trim_start();
        let Some(after_void) = s.strip_prefix("void") else {
            continue;
        };
        s = after_void.trim_start();
        if let Some(bounds) = s.strip_prefix("__launch_bounds__") {
            s = skip_parens(bounds.trim_start()).trim_start();
        }
        let name: String = s
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && s[name.len()..].trim_start().starts_with('(') {
            names.push(name);
        }
    }
    names
}

/// `s` after the balanced parenthesised group it starts with (`s` itself if it starts with none).
fn skip_parens(s: &str) -> &str {
    if !s.starts_with('(') {
        return s;
    }
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &s[i + 1..];
                }
            }
            _ => {}
        }
    }
    ""
}

/// `source` with `//` and `/* */` comments blanked (string literals in kernels hold no `//`).
fn strip_comments(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('/', Some('/')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}
