//! A pre-scan of YAML text that bounds flow-collection nesting (`[a, [a, …`, `{a: {a: …`)
//! before libyaml sees it. libyaml's scanner walks every open flow level's possible simple key
//! on each token, so its time grows with the square of the nesting: 500 KB of `{a: ` took
//! minutes. serde_yaml_ng's own recursion limit (128) applies only after libyaml has scanned
//! the whole document, so it comes too late; this scan is linear and refuses a document deeper
//! than [`MAX_FLOW_DEPTH`] before the parser starts.
//!
//! The scan is lexical, not a parser: it skips comments, quoted scalars and block scalars
//! (`|`, `>`), and counts `[`/`{` only where YAML starts a flow collection (at the start of a
//! value in block context, at the start of a token inside one). Block nesting is not counted:
//! libyaml handles it in linear time, and serde_yaml_ng's recursion limit bounds it.

/// Deepest flow nesting read. Half serde_yaml_ng's recursion limit (128): 16 MiB of
/// collections 64 deep parse in about the time of 16 MiB of flat ones (BENCHMARKS.md), and a
/// Kubernetes manifest in flow style nests a handful of levels (JSON, read by serde_json, is
/// not scanned).
pub const MAX_FLOW_DEPTH: usize = 64;

/// Where the scan found nesting deeper than [`MAX_FLOW_DEPTH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooDeep {
    /// 1-based line and column of the opening bracket past the limit.
    pub line: usize,
    pub column: usize,
}

/// Scans `text` (one file, all its documents); `Err` at the first bracket past the limit.
pub fn check(text: &str) -> Result<(), TooDeep> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut line = 1usize;
    let mut line_start = 0usize;
    // At the start of a value: a line's first character, or after `- `, `: `, `? ` (block
    // context); after `[`, `{`, `,` or whitespace (flow context).
    let mut value_start = true;
    // Indentation of the line whose value is a block scalar: its content is every following
    // line indented deeper (or blank).
    let mut block_scalar_of: Option<usize> = None;
    let mut fresh_line = true;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if fresh_line {
            fresh_line = false;
            let indent = bytes[i..].iter().take_while(|&&c| c == b' ').count();
            let rest = &bytes[i + indent..];
            let blank = rest.first().is_none_or(|&c| c == b'\n' || c == b'\r');
            if let Some(parent) = block_scalar_of {
                if blank || indent > parent {
                    i = skip_line(bytes, i);
                    line += 1;
                    line_start = i;
                    fresh_line = true;
                    continue;
                }
                block_scalar_of = None;
            }
            // A document marker ends whatever flow the last document left open.
            if indent == 0 && (rest.starts_with(b"---") || rest.starts_with(b"...")) {
                depth = 0;
            }
            i += indent;
            value_start = true;
            continue;
        }
        match b {
            b'\n' => {
                line += 1;
                line_start = i + 1;
                fresh_line = true;
                i += 1;
                continue;
            }
            b'#' if i == line_start || matches!(bytes[i - 1], b' ' | b'\t' | b'\n') => {
                i = skip_comment(bytes, i);
                continue;
            }
            b'"' | b'\'' if value_start => {
                let (end, newlines, last_newline) = skip_quoted(bytes, i);
                line += newlines;
                if let Some(at) = last_newline {
                    line_start = at + 1;
                }
                i = end;
                value_start = false;
                continue;
            }
            b'[' | b'{' if value_start => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Err(TooDeep {
                        line,
                        column: text[line_start..i].chars().count() + 1,
                    });
                }
                value_start = true;
            }
            b']' | b'}' if depth > 0 => {
                depth -= 1;
                value_start = false;
            }
            b',' if depth > 0 => value_start = true,
            b' ' | b'\t' | b'\r' => {
                if depth > 0 {
                    value_start = true;
                }
            }
            b'-' | b':' | b'?' if depth == 0 => {
                let next = bytes.get(i + 1).copied();
                if next.is_none_or(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r')) {
                    value_start = true;
                    i += 1;
                    continue;
                }
                value_start = false;
            }
            b':' => value_start = true,
            b'|' | b'>' if depth == 0 && value_start => {
                // A block scalar header (`|`, `>-`, `|2+`, then maybe a comment): its content
                // is the lines below, indented deeper than this one.
                let indent = bytes[line_start..]
                    .iter()
                    .take_while(|&&c| c == b' ')
                    .count();
                block_scalar_of = Some(indent);
                i = skip_line(bytes, i);
                line += 1;
                line_start = i;
                fresh_line = true;
                continue;
            }
            _ => value_start = false,
        }
        i += 1;
    }
    Ok(())
}

/// The index just past the end of the line `i` is on (past its `\n`).
fn skip_line(bytes: &[u8], i: usize) -> usize {
    match bytes[i..].iter().position(|&c| c == b'\n') {
        Some(n) => i + n + 1,
        None => bytes.len(),
    }
}

/// The index of the `\n` ending the comment at `i` (or the end).
fn skip_comment(bytes: &[u8], i: usize) -> usize {
    match bytes[i..].iter().position(|&c| c == b'\n') {
        Some(n) => i + n,
        None => bytes.len(),
    }
}

/// Past the quoted scalar starting at `i`: its end, the newlines inside, the last of them.
fn skip_quoted(bytes: &[u8], i: usize) -> (usize, usize, Option<usize>) {
    let quote = bytes[i];
    let (mut j, mut newlines, mut last) = (i + 1, 0, None);
    while j < bytes.len() {
        match bytes[j] {
            b'\\' if quote == b'"' => j += 1,
            b'\'' if quote == b'\'' && bytes.get(j + 1) == Some(&b'\'') => j += 1,
            c if c == quote => return (j + 1, newlines, last),
            b'\n' => {
                newlines += 1;
                last = Some(j);
            }
            _ => {}
        }
        j += 1;
    }
    (bytes.len(), newlines, last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(open: &str, close: &str, n: usize) -> String {
        format!("x: {}1{}\n", open.repeat(n), close.repeat(n))
    }

    #[test]
    fn deep_flow_collections_are_refused_where_they_pass_the_limit() {
        assert!(check(&nested("[a, ", "]", MAX_FLOW_DEPTH)).is_ok());
        assert_eq!(
            check(&nested("[a, ", "]", MAX_FLOW_DEPTH + 1)),
            Err(TooDeep {
                line: 1,
                column: 4 + 4 * MAX_FLOW_DEPTH
            })
        );
        assert!(check(&nested("{a: ", "}", 100_000)).is_err());
        assert!(check(&format!("---\n{}", nested("[{a: ", "}]", 65))).is_err());
    }

    #[test]
    fn brackets_in_scalars_comments_and_block_scalars_do_not_count() {
        let many = "[".repeat(500);
        let text = format!(
            "a: '{many}'\nb: \"{many}\\\"\"\nc: x{many}\n# {many}\nd: |\n  {many}\n\n  {many}\ne: >-\n    {many}\nf: [1, {{g: [2]}}]\ng: it's [\nh: 'don''t {many}'\n"
        );
        assert_eq!(check(&text), Ok(()));
    }

    #[test]
    fn real_manifests_pass() {
        for text in [
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {a: b}}\nspec:\n  containers:\n  - {name: c, image: x, args: [\"a\", \"b\"]}\n",
            "- - - [a]\n- {a: [b, {c: d}]}\n",
        ] {
            assert_eq!(check(text), Ok(()), "{text}");
        }
    }
}
