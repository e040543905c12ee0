//! `$(VAR)` expansion in env values, command and args, exactly as kubelet does it
//! (k8s.io/kubernetes/third_party/forked/golang/expansion): `$$` is an escaped `$`, an
//! undefined `$(VAR)` stays as written, an unclosed `$(` stays as written.

use std::collections::HashMap;

pub fn expand(input: &str, vars: &HashMap<String, String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance = match rest.as_bytes()[0] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest.find(')') {
                    Some(close) => {
                        let name = &rest[1..close];
                        match vars.get(name) {
                            Some(value) => out.push_str(value),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        close + 1
                    }
                    None => {
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    // Not a reference: keep the `$` and let the next char be copied normally.
                    out.push('$');
                    0
                }
            };
            cursor += advance + 1;
            checkpoint = cursor;
        } else {
            cursor += 1;
        }
    }
    out.push_str(&input[checkpoint.min(input.len())..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> HashMap<String, String> {
        [("A", "alpha"), ("B", "beta")].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn expands_like_kubelet() {
        let v = vars();
        assert_eq!(expand("$(A)-$(B)", &v), "alpha-beta");
        assert_eq!(expand("$(MISSING)", &v), "$(MISSING)");
        assert_eq!(expand("$$(A)", &v), "$(A)");
        assert_eq!(expand("$$", &v), "$");
        assert_eq!(expand("$(A", &v), "$(A");
        assert_eq!(expand("cost $5", &v), "cost $5");
        assert_eq!(expand("trailing $", &v), "trailing $");
        assert_eq!(expand("", &v), "");
        assert_eq!(expand("x$(A)y", &v), "xalphay");
    }
}
