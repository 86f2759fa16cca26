//! Splitting SQL text into statements at the `;`s that are not inside a string, a
//! quoted identifier or a comment.

/// The complete statements of `text` (each with its `;`), and the rest after the last
/// one: a statement not yet ended.
pub fn statements(text: &str) -> (Vec<&str>, &str) {
    #[derive(PartialEq)]
    enum In {
        Code,
        Str,
        Ident,
        LineComment,
        BlockComment,
    }
    let b = text.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut i, mut state) = (0, 0, In::Code);
    while i < b.len() {
        let next = b.get(i + 1).copied();
        match state {
            In::Code => match b[i] {
                b'\'' => state = In::Str,
                b'"' => state = In::Ident,
                b'-' if next == Some(b'-') => state = In::LineComment,
                b'/' if next == Some(b'*') => {
                    state = In::BlockComment;
                    i += 1;
                }
                b';' => {
                    out.push(&text[start..=i]);
                    start = i + 1;
                }
                _ => {}
            },
            // A doubled quote inside a string or identifier is the quote itself: the
            // first one ends the state and the second starts it again.
            In::Str if b[i] == b'\'' => state = In::Code,
            In::Ident if b[i] == b'"' => state = In::Code,
            In::LineComment if b[i] == b'\n' => state = In::Code,
            In::BlockComment if b[i] == b'*' && next == Some(b'/') => {
                state = In::Code;
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    (out, &text[start..])
}

/// Whether `text` holds nothing but white space and comments.
pub fn is_blank(text: &str) -> bool {
    let mut rest = text.trim_start();
    loop {
        if let Some(r) = rest.strip_prefix("--") {
            rest = r
                .split_once('\n')
                .map_or("", |(_, after)| after)
                .trim_start();
        } else if let Some(r) = rest.strip_prefix("/*") {
            match r.split_once("*/") {
                Some((_, after)) => rest = after.trim_start(),
                None => return false,
            }
        } else {
            return rest.is_empty();
        }
    }
}
