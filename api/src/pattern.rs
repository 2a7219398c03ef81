//! Regular expressions of routes, compiled the one way both validation and the
//! waypoint use: the `regex` crate's syntax (close to RE2's, which the Gateway API
//! names), matched against the whole value, and at most 64 KiB compiled so that
//! matching stays cheap.

/// Compiles `pattern`, anchored at both ends; the error says why in one line.
pub fn compile_regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(64 * 1024)
        .build()
        .map_err(|e| match e {
            regex::Error::Syntax(detail) => format!(
                "{pattern:?} is not a regular expression: {}",
                detail
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim_start_matches("error: ")
            ),
            regex::Error::CompiledTooBig(limit) => {
                format!("{pattern:?} compiles to more than {limit} bytes")
            }
            other => format!("{pattern:?}: {other}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchored_and_explained() {
        let r = compile_regex("/items/[0-9]+").unwrap();
        assert!(r.is_match("/items/42"));
        assert!(!r.is_match("/items/42/x"));
        assert!(!r.is_match("/x/items/42"));
        // An alternation is anchored as a whole.
        let r = compile_regex("a|b").unwrap();
        assert!(!r.is_match("ab"));
        let e = compile_regex("(a").unwrap_err();
        assert!(e.starts_with("\"(a\" is not a regular expression: "), "{e}");
        assert!(
            compile_regex("a{1000}{1000}")
                .unwrap_err()
                .contains("compiles to more")
        );
    }
}
