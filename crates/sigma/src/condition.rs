//! The `condition` expression: `and`, `or`, `not`, parentheses, `1 of x*`,
//! `all of x*`, `1 of them`, `all of them`. Precedence: `not` > `and` > `or`.

/// A parsed condition over detection identifiers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Id(String),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    /// `1 of pattern` (`all == false`) or `all of pattern`; `pattern` may end in or
    /// contain `*`; `them` is every identifier not starting with `_`.
    Of {
        all: bool,
        pattern: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum T {
    Open,
    Close,
    And,
    Or,
    Not,
    Of { all: bool },
    Word(String),
}

fn lex(s: &str) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if c == '(' || c == ')' {
            out.push(if c == '(' { T::Open } else { T::Close });
            chars.next();
            continue;
        }
        if c == '|' {
            return Err(
                "aggregation expressions (`| count() …`) are not supported; use a correlation rule"
                    .into(),
            );
        }
        let mut end = i;
        while let Some(&(j, d)) = chars.peek() {
            if d.is_whitespace() || d == '(' || d == ')' || d == '|' {
                break;
            }
            end = j + d.len_utf8();
            chars.next();
        }
        let w = &s[i..end];
        match w.to_ascii_lowercase().as_str() {
            "and" => out.push(T::And),
            "or" => out.push(T::Or),
            "not" => out.push(T::Not),
            "of" => {
                let q = match out.pop() {
                    Some(T::Word(q)) => q,
                    _ => return Err("`of` without `1`/`all`/`any` before it".into()),
                };
                let all = match q.to_ascii_lowercase().as_str() {
                    "all" => true,
                    "1" | "any" => false,
                    other => return Err(format!("unsupported quantifier `{other} of`")),
                };
                out.push(T::Of { all });
            }
            _ => out.push(T::Word(w.to_string())),
        }
    }
    Ok(out)
}

/// Parses a condition string.
pub(crate) fn parse(s: &str) -> Result<Expr, String> {
    let toks = lex(s)?;
    let mut p = P { t: &toks, i: 0 };
    let e = p.or()?;
    if p.i != toks.len() {
        return Err(format!("condition: unexpected {:?}", toks[p.i]));
    }
    Ok(e)
}

struct P<'a> {
    t: &'a [T],
    i: usize,
}

impl P<'_> {
    fn peek(&self) -> Option<&T> {
        self.t.get(self.i)
    }
    fn or(&mut self) -> Result<Expr, String> {
        let mut v = vec![self.and()?];
        while self.peek() == Some(&T::Or) {
            self.i += 1;
            v.push(self.and()?);
        }
        Ok(if v.len() == 1 {
            v.pop().unwrap_or(Expr::Or(vec![]))
        } else {
            Expr::Or(v)
        })
    }
    fn and(&mut self) -> Result<Expr, String> {
        let mut v = vec![self.unary()?];
        while self.peek() == Some(&T::And) {
            self.i += 1;
            v.push(self.unary()?);
        }
        Ok(if v.len() == 1 {
            v.pop().unwrap_or(Expr::And(vec![]))
        } else {
            Expr::And(v)
        })
    }
    fn unary(&mut self) -> Result<Expr, String> {
        match self.t.get(self.i).cloned() {
            Some(T::Not) => {
                self.i += 1;
                Ok(Expr::Not(Box::new(self.unary()?)))
            }
            Some(T::Open) => {
                self.i += 1;
                let e = self.or()?;
                if self.peek() != Some(&T::Close) {
                    return Err("condition: missing `)`".into());
                }
                self.i += 1;
                Ok(e)
            }
            Some(T::Of { all }) => {
                self.i += 1;
                match self.t.get(self.i) {
                    Some(T::Word(w)) => {
                        self.i += 1;
                        Ok(Expr::Of {
                            all,
                            pattern: w.clone(),
                        })
                    }
                    _ => Err("condition: `of` needs an identifier pattern or `them`".into()),
                }
            }
            Some(T::Word(w)) => {
                self.i += 1;
                Ok(Expr::Id(w))
            }
            Some(t) => Err(format!("condition: unexpected {t:?}")),
            None => Err("condition: unexpected end".into()),
        }
    }
}

/// Whether identifier `id` is selected by an `of` pattern.
pub(crate) fn pattern_matches(pattern: &str, id: &str) -> bool {
    if pattern == "them" {
        return !id.starts_with('_');
    }
    glob(pattern.as_bytes(), id.as_bytes())
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len()).any(|k| glob(&p[1..], &s[k..])),
        Some(&c) => s.first() == Some(&c) && glob(&p[1..], &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Expr {
        Expr::Id(s.into())
    }

    #[test]
    fn precedence() {
        assert_eq!(
            parse("a or b and not c").unwrap(),
            Expr::Or(vec![
                id("a"),
                Expr::And(vec![id("b"), Expr::Not(Box::new(id("c")))])
            ])
        );
        assert_eq!(
            parse("(a or b) and c").unwrap(),
            Expr::And(vec![Expr::Or(vec![id("a"), id("b")]), id("c")])
        );
        assert_eq!(
            parse("1 of sel* and not all of them").unwrap(),
            Expr::And(vec![
                Expr::Of {
                    all: false,
                    pattern: "sel*".into()
                },
                Expr::Not(Box::new(Expr::Of {
                    all: true,
                    pattern: "them".into()
                }))
            ])
        );
        assert!(parse("a | count() > 5").is_err());
        assert!(parse("(a or b").is_err());
        assert!(parse("a b").is_err());
        assert!(parse("2 of x*").is_err());
    }

    #[test]
    fn patterns() {
        assert!(pattern_matches("sel*", "selection_img"));
        assert!(!pattern_matches("sel*", "filter"));
        assert!(pattern_matches("*_img", "sel_img"));
        assert!(pattern_matches("them", "filter"));
        assert!(!pattern_matches("them", "_private"));
    }
}
