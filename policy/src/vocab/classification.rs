//! The grade of a data product (GB/T 43697-2024), from general-1 to core.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The grade of a data product (GB/T 43697-2024), highest first:
/// `core`, `important`, `general-3`, `general-2`, `general-1`.
///
/// The order of the enum is the order of sensitivity, so `Classification::General1 <
/// Classification::Core` (general-1 is the least sensitive, core the most).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Classification {
    /// 一般数据, graded 1: public.
    General1,
    /// 一般数据, graded 2.
    General2,
    /// 一般数据, graded 3: sensitive general data.
    General3,
    /// 重要数据: needs a recipient-region constraint and a human approval.
    Important,
    /// 核心数据: never leaves the node.
    Core,
}

impl Classification {
    /// All levels, least sensitive first.
    pub const ALL: [Classification; 5] = [
        Classification::General1,
        Classification::General2,
        Classification::General3,
        Classification::Important,
        Classification::Core,
    ];

    /// The level's name as written in policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Classification::General1 => "general-1",
            Classification::General2 => "general-2",
            Classification::General3 => "general-3",
            Classification::Important => "important",
            Classification::Core => "core",
        }
    }

    /// Rank for comparisons: 1 (general-1) to 5 (core).
    pub(crate) fn rank(self) -> u8 {
        self as u8 + 1
    }
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Classification {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Classification::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown classification `{s}`: use one of core, important, general-3, general-2, general-1"
                )
            })
    }
}

impl TryFrom<String> for Classification {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Classification> for String {
    fn from(c: Classification) -> String {
        c.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_order_and_names() {
        assert!(Classification::Core > Classification::Important);
        assert!(Classification::General3 > Classification::General1);
        for c in Classification::ALL {
            assert_eq!(c.as_str().parse::<Classification>().unwrap(), c);
        }
        assert!("secret".parse::<Classification>().is_err());
    }
}
