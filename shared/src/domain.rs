//! Domain rules for episodes: the newtypes a value has to pass through before anything else in
//! the system sees it ("parse, don't validate"). No I/O here.

use serde::{Deserialize, Serialize};

pub const TITLE_MAX: usize = 200;
pub const DESCRIPTION_MAX: usize = 10_000;
pub const CATEGORIES_MAX: usize = 20;
pub const CATEGORY_MAX: usize = 50;

/// PostgreSQL text cannot hold U+0000, so no field may.
const NUL: &str = "must not contain the NUL character";

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpisodeStatus {
    Draft,
    InProduction,
    Published,
    Archived,
}

impl EpisodeStatus {
    pub const ALL: [EpisodeStatus; 4] =
        [Self::Draft, Self::InProduction, Self::Published, Self::Archived];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::InProduction => "in_production",
            Self::Published => "published",
            Self::Archived => "archived",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// One rule a field broke, as the `errors` array of a problem+json body shows it.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// 1 to 200 characters, not only white space.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Title(String);

impl TryFrom<String> for Title {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        let chars = value.chars().count();
        if value.trim().is_empty() {
            Err("must not be empty".into())
        } else if value.contains('\0') {
            Err(NUL.into())
        } else if chars > TITLE_MAX {
            Err(format!("must be at most {TITLE_MAX} characters (got {chars})"))
        } else {
            Ok(Self(value))
        }
    }
}

impl From<Title> for String {
    fn from(t: Title) -> Self {
        t.0
    }
}

impl Title {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Up to 10,000 characters.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Description(String);

impl TryFrom<String> for Description {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        let chars = value.chars().count();
        if value.contains('\0') {
            Err(NUL.into())
        } else if chars > DESCRIPTION_MAX {
            Err(format!("must be at most {DESCRIPTION_MAX} characters (got {chars})"))
        } else {
            Ok(Self(value))
        }
    }
}

impl From<Description> for String {
    fn from(d: Description) -> Self {
        d.0
    }
}

impl Description {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// At most 20 distinct categories of 1 to 50 characters each, order kept.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct Categories(Vec<String>);

impl TryFrom<Vec<String>> for Categories {
    type Error = String;
    fn try_from(values: Vec<String>) -> Result<Self, Self::Error> {
        if values.len() > CATEGORIES_MAX {
            return Err(format!("at most {CATEGORIES_MAX} categories (got {})", values.len()));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, c) in values.iter().enumerate() {
            let chars = c.chars().count();
            if c.contains('\0') {
                return Err(format!("category {i}: {NUL}"));
            }
            if c.trim().is_empty() || chars > CATEGORY_MAX {
                return Err(format!("category {i} must be 1 to {CATEGORY_MAX} characters"));
            }
            if !seen.insert(c.as_str()) {
                return Err(format!("category {i} ({c:?}) is repeated"));
            }
        }
        Ok(Self(values))
    }
}

impl From<Categories> for Vec<String> {
    fn from(c: Categories) -> Self {
        c.0
    }
}

impl Categories {
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: TryFrom<V, Error = String>, V>(input: V, ok: bool) {
        assert_eq!(T::try_from(input).is_ok(), ok);
    }

    #[test]
    fn titles() {
        check::<Title, _>("Pilot".to_string(), true);
        check::<Title, _>("é".repeat(200), true);
        check::<Title, _>("x".repeat(201), false);
        check::<Title, _>(String::new(), false);
        check::<Title, _>("   ".to_string(), false);
        check::<Title, _>("a\0b".to_string(), false);
    }

    #[test]
    fn descriptions() {
        check::<Description, _>(String::new(), true);
        check::<Description, _>("x".repeat(10_000), true);
        check::<Description, _>("x".repeat(10_001), false);
    }

    #[test]
    fn categories() {
        let many = |n: usize| (0..n).map(|i| format!("c{i}")).collect::<Vec<_>>();
        check::<Categories, _>(many(20), true);
        check::<Categories, _>(many(21), false);
        check::<Categories, _>(vec!["x".repeat(50)], true);
        check::<Categories, _>(vec!["x".repeat(51)], false);
        check::<Categories, _>(vec![String::new()], false);
        check::<Categories, _>(vec!["\0".into()], false);
        check::<Description, _>("\0".to_string(), false);
        check::<Categories, _>(vec!["a".into(), "a".into()], false);
    }

    #[test]
    fn statuses_round_trip() {
        for s in EpisodeStatus::ALL {
            assert_eq!(EpisodeStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(EpisodeStatus::parse("live"), None);
    }
}
