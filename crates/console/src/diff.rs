//! A line diff between two texts, for comparing configuration versions: the lines both
//! have in common (a longest common subsequence), the lines only the old text has
//! (removed) and only the new one has (added), in order.
//!
//! Written here rather than taken from a crate: the console needs one function over
//! texts of at most a few thousand lines, and ~80 lines of code carry no licence, audit
//! or update burden. The common head and tail are matched first (a configuration edit
//! usually changes a few lines in the middle); the rest is the classic dynamic
//! programming LCS, whose table is bounded ([`MAX_CELLS`]): beyond it the middle is shown
//! as removed then added, which is still a correct (if not minimal) difference.

/// Largest LCS table (old lines × new lines of the part that differs).
pub const MAX_CELLS: usize = 4_000_000;

/// One line of a difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// In both: line numbers (1-based) in the old and the new text.
    Same(usize, usize, &'a str),
    /// Only in the old text, at this line.
    Removed(usize, &'a str),
    /// Only in the new text, at this line.
    Added(usize, &'a str),
}

/// The difference between `old` and `new`, line by line.
pub fn lines<'a>(old: &'a str, new: &'a str) -> Vec<Line<'a>> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let head = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let tail = a[head..]
        .iter()
        .rev()
        .zip(b[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (ma, mb) = (&a[head..a.len() - tail], &b[head..b.len() - tail]);
    let mut out: Vec<Line> = (0..head).map(|i| Line::Same(i + 1, i + 1, a[i])).collect();
    middle(ma, mb, head, &mut out);
    for k in 0..tail {
        let (i, j) = (a.len() - tail + k, b.len() - tail + k);
        out.push(Line::Same(i + 1, j + 1, a[i]));
    }
    out
}

/// The part between the common head and tail; `skip` lines precede it in both.
fn middle<'a>(a: &[&'a str], b: &[&'a str], skip: usize, out: &mut Vec<Line<'a>>) {
    let (n, m) = (a.len(), b.len());
    if n == 0 || m == 0 || n.saturating_mul(m) > MAX_CELLS {
        out.extend((0..n).map(|i| Line::Removed(skip + i + 1, a[i])));
        out.extend((0..m).map(|j| Line::Added(skip + j + 1, b[j])));
        return;
    }
    // len[i][j]: the LCS length of a[i..] and b[j..].
    let w = m + 1;
    let mut len = vec![0u32; (n + 1) * w];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            len[i * w + j] = if a[i] == b[j] {
                len[(i + 1) * w + j + 1] + 1
            } else {
                len[(i + 1) * w + j].max(len[i * w + j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push(Line::Same(skip + i + 1, skip + j + 1, a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || len[(i + 1) * w + j] >= len[i * w + j + 1]) {
            // Removed lines come before added ones where either keeps the LCS.
            out.push(Line::Removed(skip + i + 1, a[i]));
            i += 1;
        } else {
            out.push(Line::Added(skip + j + 1, b[j]));
            j += 1;
        }
    }
}

/// Lines added and removed.
pub fn counts(d: &[Line]) -> (usize, usize) {
    d.iter().fold((0, 0), |(add, del), l| match l {
        Line::Added(..) => (add + 1, del),
        Line::Removed(..) => (add, del + 1),
        Line::Same(..) => (add, del),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Line::*;

    /// Applying the difference to the old text gives the new one; the common lines are
    /// a subsequence of both.
    fn check(old: &str, new: &str) -> Vec<Line<'static>> {
        let d = lines(old, new);
        let rebuilt_new: Vec<&str> = d
            .iter()
            .filter_map(|l| match l {
                Same(_, _, t) | Added(_, t) => Some(*t),
                Removed(..) => None,
            })
            .collect();
        let rebuilt_old: Vec<&str> = d
            .iter()
            .filter_map(|l| match l {
                Same(_, _, t) | Removed(_, t) => Some(*t),
                Added(..) => None,
            })
            .collect();
        assert_eq!(rebuilt_new, new.lines().collect::<Vec<_>>());
        assert_eq!(rebuilt_old, old.lines().collect::<Vec<_>>());
        d.into_iter()
            .map(|l| match l {
                Same(i, j, t) => Same(i, j, String::leak(t.to_owned())),
                Removed(i, t) => Removed(i, String::leak(t.to_owned())),
                Added(j, t) => Added(j, String::leak(t.to_owned())),
            })
            .collect()
    }

    #[test]
    fn a_changed_line_in_the_middle() {
        let d = check("a\nb\nc\nd\n", "a\nb\nX\nd\n");
        assert_eq!(
            d,
            vec![
                Same(1, 1, "a"),
                Same(2, 2, "b"),
                Removed(3, "c"),
                Added(3, "X"),
                Same(4, 4, "d"),
            ]
        );
        assert_eq!(counts(&d), (1, 1));
    }

    #[test]
    fn insertions_and_deletions_keep_the_longest_common_lines() {
        let d = check("x\na\nb\nc\ny\n", "a\nq\nb\nc\nz\n");
        let same: Vec<&str> = d
            .iter()
            .filter_map(|l| match l {
                Same(_, _, t) => Some(*t),
                _ => None,
            })
            .collect();
        assert_eq!(same, vec!["a", "b", "c"]);
        assert_eq!(counts(&d), (2, 2));
        // Line numbers follow each text.
        assert!(d.contains(&Added(2, "q")));
        assert!(d.contains(&Removed(5, "y")));
        assert!(d.contains(&Added(5, "z")));
    }

    #[test]
    fn empty_texts_and_identical_texts() {
        assert!(lines("", "").is_empty());
        assert_eq!(check("", "a\nb\n"), vec![Added(1, "a"), Added(2, "b")]);
        assert_eq!(check("a\n", ""), vec![Removed(1, "a")]);
        let d = check("same\ntext\n", "same\ntext\n");
        assert_eq!(counts(&d), (0, 0));
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn a_middle_beyond_the_table_bound_is_still_a_correct_difference() {
        let old: String = (0..2100).map(|i| format!("old {i}\n")).collect();
        let new: String = (0..2100).map(|i| format!("new {i}\n")).collect();
        let d = check(&old, &new);
        assert_eq!(counts(&d), (2100, 2100));
    }

    #[test]
    fn repeated_lines_and_crlf() {
        check("a\na\nb\na\n", "a\nb\na\na\nb\n");
        let d = check("k = 1\r\nj = 2\r\n", "k = 1\r\nj = 3\r\n");
        assert_eq!(counts(&d), (1, 1));
    }
}
