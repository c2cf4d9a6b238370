//! The bodies of the fuzz targets (`policy/fuzz/`), shared with the test that runs the
//! seeded corpus in normal `cargo test`. Each takes arbitrary bytes and panics only if
//! an invariant is broken: a parser must never panic, a parsed policy must round-trip
//! through its own format, and a compiled policy must evaluate without panicking.

use time::macros::datetime;

use crate::{
    Action, Classification, CompileContext, Policy, RecipientKind, RegionCode, Request, Requester,
    Scope, State, compile, evaluate, vocab::ParticipantCode,
};

/// TOML authoring form.
pub fn toml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(p) = Policy::from_toml(text)
    {
        let back = Policy::from_toml(&p.to_toml()).expect("exported TOML reads back");
        assert_eq!(back, p, "TOML round trip");
        exercise(p);
    }
}

/// JSON authoring form.
pub fn json(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(p) = Policy::from_json(text)
    {
        let back = Policy::from_json(&p.to_json()).expect("exported JSON reads back");
        assert_eq!(back, p, "JSON round trip");
        exercise(p);
    }
}

/// ODRL JSON-LD.
pub fn odrl(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(p) = Policy::from_odrl(text)
    {
        let back = Policy::from_odrl(&p.to_odrl_string()).expect("exported JSON-LD reads back");
        assert_eq!(back, p, "JSON-LD round trip");
        exercise(p);
    }
}

/// Compiles against every classification and evaluates one request at every scope.
fn exercise(p: Policy) {
    let requester = Requester {
        participant: ParticipantCode::parse("91110000600037341L").expect("valid literal"),
        kind: RecipientKind::Government,
        sector: Some("I65".into()),
        region: RegionCode::parse("330106").ok(),
        security_level: Some(3),
        roles: vec!["analyst".into()],
    };
    for class in Classification::ALL {
        let Ok(c) = compile(p.clone(), &CompileContext::new(class)) else {
            continue;
        };
        for scope in [
            Scope::Catalog,
            Scope::Negotiation,
            Scope::Transfer,
            Scope::Use,
        ] {
            let request = Request {
                scope,
                action: Action::Read,
                requester: requester.clone(),
                purpose: Some("research".into()),
            };
            let state = State::initial(datetime!(2026-03-01 0:00 UTC));
            let d = evaluate(&c, &request, &state);
            let _ = d.explain();
        }
    }
}
