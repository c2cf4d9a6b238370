//! The purpose vocabulary: terms and their broader term (`isA`).

use std::collections::HashMap;

/// A purpose vocabulary: terms and their broader term (`isA`). Configurable per data
/// space; [`PurposeVocabulary::default`] gives a small common one.
///
/// A term may have at most one broader term, so the vocabulary is a forest. Term IDs
/// are dense indexes assigned in the order terms were added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurposeVocabulary {
    terms: Vec<String>,
    parent: Vec<Option<u16>>,
    index: HashMap<String, u16>,
}

impl PurposeVocabulary {
    /// An empty vocabulary.
    pub fn empty() -> Self {
        PurposeVocabulary {
            terms: Vec::new(),
            parent: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// Builds a vocabulary from `(term, broader term)` pairs; a broader term must be
    /// added before its narrower ones.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<Self, String> {
        let mut v = PurposeVocabulary::empty();
        for (term, parent) in pairs {
            v.add(term, parent)?;
        }
        Ok(v)
    }

    /// Adds one term under an existing broader term (or at the top with `None`).
    pub fn add(&mut self, term: &str, broader: Option<&str>) -> Result<(), String> {
        if term.is_empty() || term.chars().any(char::is_whitespace) {
            return Err(format!(
                "purpose term `{term}` must be non-empty and have no spaces"
            ));
        }
        if self.index.contains_key(term) {
            return Err(format!("purpose term `{term}` is defined twice"));
        }
        let parent = match broader {
            None => None,
            Some(p) => Some(*self.index.get(p).ok_or_else(|| {
                format!(
                    "purpose term `{term}` names broader term `{p}`, which is not defined before it"
                )
            })?),
        };
        let id = u16::try_from(self.terms.len())
            .map_err(|_| "a purpose vocabulary holds at most 65535 terms".to_owned())?;
        self.terms.push(term.to_owned());
        self.parent.push(parent);
        self.index.insert(term.to_owned(), id);
        Ok(())
    }

    /// The term's ID, if the term is in the vocabulary.
    pub fn id(&self, term: &str) -> Option<u16> {
        self.index.get(term).copied()
    }

    /// The term with this ID.
    pub fn term(&self, id: u16) -> &str {
        &self.terms[usize::from(id)]
    }

    /// Number of terms.
    pub fn len(&self) -> usize {
        self.terms.len()
    }

    /// `true` when there are no terms.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// `true` when `term` is `broader` or a narrower term of it.
    pub fn is_a(&self, term: u16, broader: u16) -> bool {
        let mut cur = Some(term);
        while let Some(t) = cur {
            if t == broader {
                return true;
            }
            cur = self.parent[usize::from(t)];
        }
        false
    }

    /// Every `(term, broader term)` pair, broader terms first: the input of
    /// [`PurposeVocabulary::from_pairs`] that rebuilds this vocabulary.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, Option<&str>)> + '_ {
        self.terms.iter().zip(&self.parent).map(|(term, parent)| {
            (
                term.as_str(),
                parent.map(|p| self.terms[usize::from(p)].as_str()),
            )
        })
    }

    /// All term IDs.
    pub(crate) fn ids(&self) -> impl Iterator<Item = u16> + '_ {
        (0..self.terms.len()).map(|i| i as u16)
    }
}

impl Default for PurposeVocabulary {
    /// A small vocabulary common in public-data use:
    ///
    /// ```text
    /// publicService   research       commercial    regulation
    ///   governmentService  scientificResearch  marketing    supervision
    ///   emergencyResponse  statistics          productDevelopment  lawEnforcement
    ///   urbanPlanning      academicResearch    creditAssessment
    /// ```
    fn default() -> Self {
        let pairs = [
            ("publicService", None),
            ("governmentService", Some("publicService")),
            ("emergencyResponse", Some("publicService")),
            ("urbanPlanning", Some("publicService")),
            ("research", None),
            ("scientificResearch", Some("research")),
            ("academicResearch", Some("scientificResearch")),
            ("statistics", Some("research")),
            ("commercial", None),
            ("marketing", Some("commercial")),
            ("productDevelopment", Some("commercial")),
            ("creditAssessment", Some("commercial")),
            ("regulation", None),
            ("supervision", Some("regulation")),
            ("lawEnforcement", Some("regulation")),
        ];
        // The list above is well formed (each broader term comes first); a failure
        // here is a bug in this literal caught by the unit tests.
        PurposeVocabulary::from_pairs(pairs).expect("default purpose vocabulary is well formed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_rebuild_the_vocabulary() {
        let v = PurposeVocabulary::default();
        let rebuilt = PurposeVocabulary::from_pairs(v.pairs()).unwrap();
        assert_eq!(rebuilt.len(), v.len());
        let academic = rebuilt.id("academicResearch").unwrap();
        assert!(rebuilt.is_a(academic, rebuilt.id("research").unwrap()));
        assert!(
            v.pairs()
                .any(|p| p == ("scientificResearch", Some("research")))
        );
    }

    #[test]
    fn purpose_hierarchy() {
        let v = PurposeVocabulary::default();
        let academic = v.id("academicResearch").unwrap();
        let research = v.id("research").unwrap();
        let marketing = v.id("marketing").unwrap();
        assert!(v.is_a(academic, research));
        assert!(v.is_a(academic, academic));
        assert!(!v.is_a(research, academic));
        assert!(!v.is_a(marketing, research));
        assert!(PurposeVocabulary::from_pairs([("a", Some("b"))]).is_err());
        assert!(PurposeVocabulary::from_pairs([("a", None), ("a", None)]).is_err());
    }
}
