//! Filling a narration's human template from its contexts.
//!
//! `{}` takes the next context in order and `{N}` takes context `N`, as `format!` does
//! (an explicit index does not move the counter). The original filled every `{}` with the
//! first context, which lost error texts; here each placeholder gets its own value.
//! A placeholder without a matching context stays as written, and any other brace is
//! literal, so a human text that is JSON (`worker_get_details`) passes through untouched.
//! Substituted values are never scanned again, so a context holding `{}` stays as it is.

/// Fills `template` from `contexts`.
pub(crate) fn fill(template: &str, contexts: &[String]) -> String {
    if contexts.is_empty() {
        return template.to_owned();
    }
    let mut out =
        String::with_capacity(template.len() + contexts.iter().map(String::len).sum::<usize>());
    let mut next_positional = 0usize;
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let inner = &after[..close];
        let index = if inner.is_empty() {
            let i = next_positional;
            next_positional += 1;
            Some(i)
        } else if inner.bytes().all(|b| b.is_ascii_digit()) && inner.len() <= 6 {
            inner.parse::<usize>().ok()
        } else {
            None
        };
        match index.and_then(|i| contexts.get(i)) {
            Some(value) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                // Not a placeholder we can fill: keep the brace and go on after it, so that
                // a `{` inside JSON does not swallow what follows.
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::fill;

    fn ctx(values: &[&str]) -> Vec<String> {
        values.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn positional_placeholders_take_contexts_in_order() {
        assert_eq!(
            fill(
                "  {} | {} | {} | port {} | {}",
                &ctx(&["worker-1", "m", "GPU-0", "9100", "ready"])
            ),
            "  worker-1 | m | GPU-0 | port 9100 | ready"
        );
    }

    #[test]
    fn error_text_is_not_lost() {
        // The original rendered this as "❌ Worker 'worker-9' not found: worker-9".
        assert_eq!(
            fill(
                "❌ Worker '{}' not found: {}",
                &ctx(&["worker-9", "worker 'worker-9' not found"])
            ),
            "❌ Worker 'worker-9' not found: worker 'worker-9' not found"
        );
    }

    #[test]
    fn indexed_placeholders() {
        assert_eq!(
            fill("{1} before {0}, {1} again", &ctx(&["a", "b"])),
            "b before a, b again"
        );
        assert_eq!(fill("{0} {} {}", &ctx(&["a", "b"])), "a a b");
    }

    #[test]
    fn missing_context_keeps_placeholder() {
        assert_eq!(fill("{} and {} and {5}", &ctx(&["x"])), "x and {} and {5}");
    }

    #[test]
    fn json_passes_through() {
        let json = "{\n  \"a\": {},\n  \"b\": [1]\n}";
        assert_eq!(fill(json, &[]), json);
        assert_eq!(
            fill(&format!("{{}} {json}"), &ctx(&["v"])),
            format!("v {json}")
        );
    }

    #[test]
    fn substituted_values_are_not_rescanned() {
        assert_eq!(fill("{} {}", &ctx(&["{}", "b"])), "{} b");
    }

    #[test]
    fn unclosed_brace_is_literal() {
        assert_eq!(fill("a { b {}", &ctx(&["x"])), "a { b x");
        assert_eq!(fill("tail {", &ctx(&["x"])), "tail {");
    }
}
