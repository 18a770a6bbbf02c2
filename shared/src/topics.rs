//! AMQP-style topic patterns (`*` is one word, `#` zero or more) and an index that finds every
//! subscriber whose pattern matches a topic without looking at the others: a trie over the
//! pattern words, walked once per topic.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

pub const PATTERN_MAX: usize = 255;
pub const WORDS_MAX: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("a pattern must be 1 to {PATTERN_MAX} characters")]
    Length,
    #[error("a pattern has at most {WORDS_MAX} words")]
    TooManyWords,
    #[error("a pattern's words are non-empty and made of letters, digits, '-', '_', '*' or '#'")]
    Word,
}

/// Checks a subscription pattern: dot-separated words, each a wildcard or plain characters.
pub fn validate(pattern: &str) -> Result<(), PatternError> {
    if pattern.is_empty() || pattern.len() > PATTERN_MAX {
        return Err(PatternError::Length);
    }
    let words: Vec<&str> = pattern.split('.').collect();
    if words.len() > WORDS_MAX {
        return Err(PatternError::TooManyWords);
    }
    let plain = |w: &str| w.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if words.iter().all(|w| *w == "*" || *w == "#" || (!w.is_empty() && plain(w))) {
        Ok(())
    } else {
        Err(PatternError::Word)
    }
}

/// Does `pattern` match `topic`? (The reference the index is tested against.)
pub fn matches(pattern: &str, topic: &str) -> bool {
    fn go(p: &[&str], t: &[&str]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(&"#"), _) => go(&p[1..], t) || (!t.is_empty() && go(p, &t[1..])),
            (Some(&"*"), Some(_)) => go(&p[1..], &t[1..]),
            (Some(w), Some(x)) if w == x => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let t: Vec<&str> = topic.split('.').collect();
    go(&p, &t)
}

#[derive(Debug)]
struct Node<K> {
    children: HashMap<String, Node<K>>,
    /// Subscribers whose pattern ends here.
    here: HashSet<K>,
}

impl<K> Default for Node<K> {
    fn default() -> Self {
        Self { children: HashMap::new(), here: HashSet::new() }
    }
}

/// Patterns to subscribers. Matching costs the topic's length times the wildcards on the way,
/// not the number of subscribers.
#[derive(Debug)]
pub struct TopicIndex<K> {
    root: Node<K>,
}

impl<K> Default for TopicIndex<K> {
    fn default() -> Self {
        Self { root: Node::default() }
    }
}

impl<K: Copy + Eq + Hash> TopicIndex<K> {
    pub fn insert(&mut self, pattern: &str, key: K) {
        let mut node = &mut self.root;
        for word in pattern.split('.') {
            node = node.children.entry(word.to_string()).or_default();
        }
        node.here.insert(key);
    }

    pub fn remove(&mut self, pattern: &str, key: K) {
        fn go<K: Eq + Hash>(node: &mut Node<K>, words: &[&str], key: &K) {
            match words.split_first() {
                None => {
                    node.here.remove(key);
                }
                Some((word, rest)) => {
                    if let Some(child) = node.children.get_mut(*word) {
                        go(child, rest, key);
                        if child.here.is_empty() && child.children.is_empty() {
                            node.children.remove(*word);
                        }
                    }
                }
            }
        }
        let words: Vec<&str> = pattern.split('.').collect();
        go(&mut self.root, &words, &key);
    }

    /// Every key with a pattern matching `topic`, each once.
    pub fn matching(&self, topic: &str) -> HashSet<K> {
        fn go<K: Copy + Eq + Hash>(node: &Node<K>, words: &[&str], out: &mut HashSet<K>) {
            if let Some(hash) = node.children.get("#") {
                // `#` takes zero or more of the remaining words.
                for skip in 0..=words.len() {
                    go(hash, &words[skip..], out);
                }
            }
            match words.split_first() {
                None => out.extend(node.here.iter().copied()),
                Some((word, rest)) => {
                    if let Some(child) = node.children.get(*word) {
                        go(child, rest, out);
                    }
                    if let Some(star) = node.children.get("*") {
                        go(star, rest, out);
                    }
                }
            }
        }
        let words: Vec<&str> = topic.split('.').collect();
        let mut out = HashSet::new();
        go(&self.root, &words, &mut out);
        out
    }

    pub fn is_empty(&self) -> bool {
        self.root.children.is_empty() && self.root.here.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const CASES: &[(&str, &str, bool)] = &[
        ("episode.*.created", "episode.42.created", true),
        ("episode.*.created", "episode.42.updated", false),
        ("episode.*.created", "episode.created", false),
        ("episode.#", "episode", true),
        ("episode.#", "episode.42.created", true),
        ("episode.42.#", "episode.43.created", false),
        ("#", "anything.at.all", true),
        ("#.created", "episode.42.created", true),
        ("#.created", "created", true),
        ("#.created", "episode.42.updated", false),
        ("*.*.notification", "user.7.notification", true),
        ("user.7.#", "user.7.notification", true),
        ("user.7.#", "user.8.notification", false),
        ("a.#.b", "a.b", true),
        ("a.#.b", "a.x.y.b", true),
        ("a.#.b", "a.x.y.c", false),
        ("a.*.#.b", "a.b", false),
        ("a.*.#.b", "a.x.b", true),
        ("#.#", "a", true),
        ("*", "a.b", false),
    ];

    #[test]
    fn the_reference_matcher() {
        for (pattern, topic, expected) in CASES {
            assert_eq!(matches(pattern, topic), *expected, "{pattern} ~ {topic}");
        }
    }

    #[test]
    fn the_index_agrees_with_the_reference() {
        let mut index = TopicIndex::default();
        for (i, (pattern, _, _)) in CASES.iter().enumerate() {
            index.insert(pattern, i);
        }
        for (_, topic, _) in CASES {
            let expected: HashSet<usize> = CASES
                .iter()
                .enumerate()
                .filter(|(_, (p, _, _))| matches(p, topic))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(index.matching(topic), expected, "{topic}");
        }
    }

    #[test]
    fn removing_forgets_only_that_key() {
        let mut index = TopicIndex::default();
        index.insert("episode.#", 1);
        index.insert("episode.#", 2);
        index.insert("episode.*.created", 3);
        index.remove("episode.#", 1);
        assert_eq!(index.matching("episode.9.created"), HashSet::from([2, 3]));
        index.remove("episode.#", 2);
        index.remove("episode.*.created", 3);
        assert!(index.is_empty());
    }

    /// Words from a small alphabet, so random patterns and topics often meet.
    fn word() -> impl Strategy<Value = String> {
        proptest::sample::select(vec!["a", "b", "episode", "user", "7", "x-y"])
            .prop_map(String::from)
    }

    fn pattern() -> impl Strategy<Value = String> {
        let part = prop_oneof![3 => word(), 1 => Just("*".to_string()), 1 => Just("#".to_string())];
        proptest::collection::vec(part, 1..6).prop_map(|w| w.join("."))
    }

    fn topic() -> impl Strategy<Value = String> {
        proptest::collection::vec(word(), 1..7).prop_map(|w| w.join("."))
    }

    /// The plainest matcher there is: `#` tried at every length, by brute force over splits.
    fn reference(p: &[&str], t: &[&str]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((&"#", rest)) => (0..=t.len()).any(|k| reference(rest, &t[k..])),
            Some((w, rest)) => t
                .split_first()
                .is_some_and(|(x, more)| (*w == "*" || w == x) && reference(rest, more)),
        }
    }

    proptest! {
        #[test]
        fn proptest_the_matcher_agrees_with_brute_force(p in pattern(), t in topic()) {
            let words = |s: &str| s.split('.').map(str::to_string).collect::<Vec<_>>();
            let (pw, tw) = (words(&p), words(&t));
            let pw: Vec<&str> = pw.iter().map(String::as_str).collect();
            let tw: Vec<&str> = tw.iter().map(String::as_str).collect();
            prop_assert_eq!(matches(&p, &t), reference(&pw, &tw), "{} ~ {}", p, t);
        }

        #[test]
        fn proptest_the_index_agrees_with_the_matcher(
            patterns in proptest::collection::vec(pattern(), 1..20),
            topics in proptest::collection::vec(topic(), 1..20),
            removed in proptest::collection::vec(any::<proptest::sample::Index>(), 0..5),
        ) {
            let mut index = TopicIndex::default();
            for (i, p) in patterns.iter().enumerate() {
                prop_assert_eq!(validate(p), Ok(()));
                index.insert(p, i);
            }
            let gone: HashSet<usize> = removed.iter().map(|r| r.index(patterns.len())).collect();
            for i in &gone {
                index.remove(&patterns[*i], *i);
            }
            for t in &topics {
                let expected: HashSet<usize> = patterns
                    .iter()
                    .enumerate()
                    .filter(|(i, p)| !gone.contains(i) && matches(p, t))
                    .map(|(i, _)| i)
                    .collect();
                prop_assert_eq!(index.matching(t), expected, "{}", t);
            }
        }

        #[test]
        fn proptest_validation_never_panics_and_accepts_only_words(s in "\\PC{0,300}") {
            if validate(&s).is_ok() {
                prop_assert!(s.len() <= PATTERN_MAX);
                prop_assert!(s.split('.').all(|w| !w.is_empty()));
                // A valid pattern is safe to index and match.
                let mut index = TopicIndex::default();
                index.insert(&s, 0u8);
                let _ = index.matching(&s);
            }
        }
    }

    #[test]
    fn patterns_are_validated() {
        assert_eq!(validate("episode.*.created"), Ok(()));
        assert_eq!(validate("user.0192-ab_c.#"), Ok(()));
        assert_eq!(validate(""), Err(PatternError::Length));
        assert_eq!(validate("a..b"), Err(PatternError::Word));
        assert_eq!(validate("a.b*"), Err(PatternError::Word));
        assert_eq!(validate("a.b."), Err(PatternError::Word));
        assert_eq!(validate(&["a"; 17].join(".")), Err(PatternError::TooManyWords));
    }
}
