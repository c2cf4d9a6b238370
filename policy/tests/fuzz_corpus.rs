//! Runs every fuzz target's body over its seeded corpus (`policy/fuzz/corpus/<target>/`)
//! so the normal test run covers what the fuzzers start from. New crashes found by
//! `cargo fuzz` belong in the corpus too.

use std::path::PathBuf;

use liutong_policy::{Policy, fuzzing};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{target}: the seeded corpus is missing");
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).expect("corpus file reads");
            (p, data)
        })
        .collect()
}

#[test]
fn toml_corpus() {
    for (path, data) in corpus("toml") {
        eprintln!("{}", path.display());
        fuzzing::toml(&data);
    }
}

#[test]
fn json_corpus() {
    for (path, data) in corpus("json") {
        eprintln!("{}", path.display());
        fuzzing::json(&data);
    }
}

#[test]
fn odrl_corpus() {
    for (path, data) in corpus("odrl") {
        eprintln!("{}", path.display());
        fuzzing::odrl(&data);
    }
}

/// Writes the seeds from `examples/` in all three forms, plus malformed inputs.
/// Run with `cargo test -p liutong-policy --test fuzz_corpus -- --ignored`.
#[test]
#[ignore = "regenerates the seeded corpus"]
fn regenerate_seeds() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("fuzz/corpus");
    for entry in std::fs::read_dir(root.join("examples")).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let p = Policy::from_toml(&text).unwrap();
        std::fs::write(out.join("toml").join(format!("seed-{stem}.toml")), &text).unwrap();
        std::fs::write(
            out.join("json").join(format!("seed-{stem}.json")),
            p.to_json(),
        )
        .unwrap();
        std::fs::write(
            out.join("odrl").join(format!("seed-{stem}.jsonld")),
            p.to_odrl_string(),
        )
        .unwrap();
    }
    let bad: [(&str, &str, &str); 9] = [
        ("toml", "bad-syntax.toml", "uid = \"x\"\ntype = "),
        (
            "toml",
            "bad-operand.toml",
            "uid = \"x\"\ntype = \"set\"\n[[permission]]\naction = \"use\"\nconstraint = [{ leftOperand = \"colour\", operator = \"eq\", rightOperand = 1 }]\n",
        ),
        (
            "toml",
            "bad-nesting.toml",
            "uid = \"x\"\ntype = \"set\"\n[[permission]]\naction = \"use\"\nconstraint = [{ or = [{ and = [{ leftOperand = \"count\", operator = \"lt\", rightOperand = 3 }, { leftOperand = \"count\", operator = \"gt\", rightOperand = 5 }] }, { leftOperand = \"count\", operator = \"eq\", rightOperand = 9 }] }]\n",
        ),
        (
            "json",
            "bad-type.json",
            "{\"uid\":\"x\",\"type\":\"set\",\"permission\":[{\"action\":\"use\",\"constraint\":[{\"leftOperand\":\"count\",\"operator\":\"lt\",\"rightOperand\":\"2026-01-01T00:00:00Z\"}]}]}",
        ),
        ("json", "bad-empty.json", "{}"),
        (
            "json",
            "deep.json",
            "{\"uid\":\"x\",\"type\":\"set\",\"permission\":[{\"action\":\"use\",\"constraint\":[{\"xone\":[{\"leftOperand\":\"role\",\"operator\":\"isAllOf\",\"rightOperand\":[\"a\",\"b\"]},{\"leftOperand\":\"region\",\"operator\":\"isNoneOf\",\"rightOperand\":[330000]}]}]}]}",
        ),
        (
            "odrl",
            "full-iris.jsonld",
            "{\"@type\":\"http://www.w3.org/ns/odrl/2/Set\",\"@id\":\"urn:x\",\"http://www.w3.org/ns/odrl/2/permission\":[{\"http://www.w3.org/ns/odrl/2/action\":{\"@id\":\"http://www.w3.org/ns/odrl/2/read\"},\"odrl:constraint\":[{\"leftOperand\":\"odrl:count\",\"operator\":\"odrl:lt\",\"rightOperand\":{\"@value\":\"3\",\"@type\":\"xsd:integer\"}}]}]}",
        ),
        (
            "odrl",
            "bad-ref.jsonld",
            "{\"@type\":\"Set\",\"uid\":\"urn:x\",\"permission\":[{\"action\":\"use\",\"constraint\":[{\"or\":{\"@list\":[{\"@id\":\"urn:c1\"},{\"@id\":\"urn:c2\"}]}}]}]}",
        ),
        ("odrl", "bad-array.jsonld", "[1, 2, {\"@type\": \"Offer\"}]"),
    ];
    for (target, name, text) in bad {
        std::fs::write(out.join(target).join(name), text).unwrap();
    }
}
