//! Name patterns of the associations file (docs/associations.md#patterns): a namespace or
//! ServiceAccount name in which `*` stands for any run of characters (none included). Only `*`:
//! no `?`, classes or braces, so the literal prefix that orders entries is plain to read and
//! whether two patterns can match one name is decidable at load.

/// A namespace or ServiceAccount name as an entry gives it: a name, or a pattern with `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamePattern<'a>(pub &'a str);

impl NamePattern<'_> {
    /// Whether the entry names a pattern rather than one name.
    pub fn is_pattern(self) -> bool {
        self.0.contains('*')
    }

    /// Whether `name` is matched. Linear in practice: the classic greedy `*` matcher that
    /// backtracks only to the last `*` (no exponential blow-up on hostile patterns).
    pub fn matches(self, name: &str) -> bool {
        matches(self.0.as_bytes(), name.as_bytes())
    }
}

/// The length of the literal prefix of `pattern` (its length when it has no `*`).
pub fn literal_prefix_len(pattern: &str) -> usize {
    pattern.find('*').unwrap_or(pattern.len())
}

fn matches(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    // The last `*` seen and the name position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if p < pattern.len() && pattern[p] == name[n] {
            p += 1;
            n += 1;
        } else if let Some((sp, sn)) = star {
            // The last `*` takes one more character.
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// Whether some name is matched by both `a` and `b` (a pattern or a plain name each): the
/// product of the two patterns' automata searched for an accepting pair of positions. At most
/// (|a|+1)·(|b|+1) states: names are at most 253 characters.
pub fn overlap(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let width = b.len() + 1;
    let mut seen = vec![false; (a.len() + 1) * width];
    let mut todo = vec![(0usize, 0usize)];
    while let Some((i, j)) = todo.pop() {
        let slot = i * width + j;
        if seen[slot] {
            continue;
        }
        seen[slot] = true;
        if i == a.len() && j == b.len() {
            return true;
        }
        let star_a = a.get(i) == Some(&b'*');
        let star_b = b.get(j) == Some(&b'*');
        // A `*` matching nothing more.
        if star_a {
            todo.push((i + 1, j));
        }
        if star_b {
            todo.push((i, j + 1));
        }
        // One character both accept: a `*` takes it and stays, a literal takes its own.
        match (a.get(i), b.get(j)) {
            (Some(b'*'), Some(&c)) if c != b'*' => todo.push((i, j + 1)),
            (Some(&c), Some(b'*')) if c != b'*' => todo.push((i + 1, j)),
            (Some(&x), Some(&y)) if x == y && x != b'*' => todo.push((i + 1, j + 1)),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_match_any_run_including_none() {
        for (p, n, m) in [
            ("*", "anything", true),
            ("*", "", true),
            ("team-*", "team-a", true),
            ("team-*", "team-", true),
            ("team-*", "team", false),
            ("team-*", "other", false),
            ("*-prod", "carts-prod", true),
            ("*-prod", "carts-dev", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXcYb", false),
            ("carts", "carts", true),
            ("carts", "cart", false),
        ] {
            assert_eq!(NamePattern(p).matches(n), m, "{p} {n}");
        }
    }

    #[test]
    fn a_hostile_pattern_is_not_exponential() {
        let pattern = "*a".repeat(60) + "b";
        let name = "a".repeat(253);
        let started = std::time::Instant::now();
        assert!(!NamePattern(&pattern).matches(&name));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn overlap_is_some_name_matched_by_both() {
        for (a, b, o) in [
            ("team-*", "team-*", true),
            ("team-*", "*", true),
            ("team-*", "prod-*", false),
            ("team-*-a", "team-a-*", true),
            ("team-*-dev", "team-*-prod", false),
            ("*-dev", "*-prod", false),
            ("a*", "*b", true),
            ("carts", "c*s", true),
            ("carts", "c*x", false),
        ] {
            assert_eq!(overlap(a, b), o, "{a} {b}");
            assert_eq!(overlap(b, a), o, "{b} {a}");
        }
    }
}
