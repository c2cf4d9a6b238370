//! Admitting, revoking and re-keying members. A member's node makes its own keys and
//! sends an admission request; the authority checks it and issues a certificate for the
//! requested TLS key and a signed credential naming the requested signing key, written
//! out as an admission bundle that holds no private key. Each change bumps the
//! trust-list sequence, so nodes see it at their next refresh.

use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::names::NameRules;
use super::store::{STATE_FILE, read_state};
use super::{Authority, AuthorityError};
use crate::base::files;
use crate::identity::bundle::{BundleManifest, files as bundle_files};
use crate::identity::membership::MEMBERSHIP_PAYLOAD_TYPE;
use crate::identity::request::AdmissionRequest;
use crate::identity::{
    Envelope, MemberRole, Membership, ParticipantId, ParticipantKind, PublicKey, RegionCode,
};
use crate::tls::certs::{self, HostNames, LeafSpec};
use crate::trust::Revocation;

/// What the operator supplies to admit a member.
#[derive(Clone, Debug)]
pub struct Admission {
    pub participant: ParticipantId,
    pub name: String,
    pub kind: ParticipantKind,
    pub sector: String,
    pub region: RegionCode,
    pub roles: Vec<MemberRole>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// Replace an existing membership (the request's keys and a new certificate).
    pub renew: bool,
}

/// An admitted member's certificate and signed credential, with the CA and the
/// authority's key, to hand to the member's IT staff. It holds no private key: the
/// member's node made its keys and keeps them.
pub struct AdmissionBundle {
    pub membership: Membership,
    pub credential: Envelope,
    pub certificate: certs::SignedCertificate,
    pub ca_pem: String,
    pub authority_name: String,
    pub authority_key: PublicKey,
    /// The DNS names and addresses the certificate carries.
    pub host_names: Vec<String>,
}

impl std::fmt::Debug for AdmissionBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionBundle")
            .field("membership", &self.membership)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// Admits a member from its node's admission request (already opened, so its proof of
    /// possession holds): a TLS certificate for the requested key naming `urn:uscc:<id>`
    /// and the allowed host names, and a membership credential naming the requested
    /// signing key. The state is saved before the bundle is returned.
    pub fn admit(
        &mut self,
        admission: Admission,
        request: &AdmissionRequest,
    ) -> Result<AdmissionBundle, AuthorityError> {
        let id = &admission.participant;
        if &request.participant_id != id {
            return Err(AuthorityError::Refused(format!(
                "the admission request was made for participant {}, not {id}; admit each \
                 member only with the request its own node made",
                request.participant_id
            )));
        }
        let _lock = self.lock()?;
        // Another process may have changed the state since this one opened it.
        self.state = read_state(&self.dir.join(STATE_FILE))?;
        if let Some(r) = self
            .state
            .revocations
            .iter()
            .find(|r| &r.participant_id == id)
        {
            return Err(AuthorityError::Revoked {
                participant: id.clone(),
                reason: r.reason.clone(),
                revoked_at: crate::base::format::format_unix(r.revoked_at),
            });
        }
        let existing = self
            .state
            .members
            .iter()
            .position(|m| &m.participant_id == id);
        if existing.is_some() && !admission.renew {
            return Err(AuthorityError::AlreadyMember(id.clone()));
        }
        if admission.name.trim().is_empty() {
            return Err(AuthorityError::Invalid("the member needs a --name".into()));
        }
        if admission.sector.trim().is_empty() {
            return Err(AuthorityError::Invalid(
                "the member needs a --sector".into(),
            ));
        }
        if admission.roles.is_empty() {
            return Err(AuthorityError::Invalid(
                "the member needs at least one role in --roles (provider, consumer, auditor)"
                    .into(),
            ));
        }
        if admission.not_after <= admission.not_before {
            return Err(AuthorityError::Invalid(
                "the membership must end after it starts".into(),
            ));
        }
        if let Some(other) = self
            .state
            .members
            .iter()
            .find(|m| &m.participant_id != id && m.signing_key == request.signing_key)
        {
            return Err(AuthorityError::Refused(format!(
                "the request's signing key is already {}'s; every member needs its own keys",
                other.participant_id
            )));
        }
        let host_names = self.check_names(id, request)?;
        let names = HostNames {
            dns: request.dns_names.iter().map(ToString::to_string).collect(),
            ips: request.ip_addresses.clone(),
        };
        let certificate = self.ca.issue_for_request(
            &request.csr_pem,
            &LeafSpec {
                common_name: format!("{} ({})", admission.name, id),
                san_uris: vec![id.san_uri()],
                not_before: admission.not_before,
                not_after: admission.not_after,
            },
            &names,
        )?;
        let mut roles = admission.roles.clone();
        roles.sort();
        roles.dedup();
        let membership = Membership {
            participant_id: id.clone(),
            name: admission.name.clone(),
            kind: admission.kind,
            sector: admission.sector.clone(),
            region: admission.region.clone(),
            roles,
            valid_from: admission.not_before.unix_timestamp(),
            valid_until: admission.not_after.unix_timestamp(),
            signing_key: request.signing_key,
            certificate_sha256: certs::fingerprint(&certificate.cert_der),
            authority: self.state.name.clone(),
        };
        let credential = Envelope::sign_json(MEMBERSHIP_PAYLOAD_TYPE, &membership, &self.signing)?;
        match existing {
            Some(i) => self.state.members[i] = membership.clone(),
            None => self.state.members.push(membership.clone()),
        }
        self.state.host_names.insert(id.clone(), host_names.clone());
        self.state.sequence += 1;
        self.save_state()?;
        Ok(AdmissionBundle {
            membership,
            credential,
            certificate,
            ca_pem: self.ca.cert_pem().to_owned(),
            authority_name: self.state.name.clone(),
            authority_key: self.signing.public_key(),
            host_names,
        })
    }

    /// The rules for names in members' certificates.
    pub fn name_rules(&self) -> &NameRules {
        &self.state.names
    }

    /// Replaces the rules for names in members' certificates. Certificates already
    /// issued keep their names until they are renewed.
    pub fn set_name_rules(&mut self, rules: NameRules) -> Result<(), AuthorityError> {
        let _lock = self.lock()?;
        self.state = read_state(&self.dir.join(STATE_FILE))?;
        self.state.names = rules;
        self.save_state()
    }

    /// The member with this ID, if any.
    pub fn member(&self, id: &ParticipantId) -> Option<&Membership> {
        self.state.members.iter().find(|m| &m.participant_id == id)
    }

    /// Refuses names outside the rules and names certified for another member; returns
    /// the request's names as text.
    fn check_names(
        &self,
        id: &ParticipantId,
        request: &AdmissionRequest,
    ) -> Result<Vec<String>, AuthorityError> {
        let rules = &self.state.names;
        let not_allowed: Vec<String> = request
            .dns_names
            .iter()
            .filter(|d| !rules.allows_dns(d))
            .map(ToString::to_string)
            .chain(
                request
                    .ip_addresses
                    .iter()
                    .filter(|ip| !rules.allows_ip(**ip))
                    .map(ToString::to_string),
            )
            .collect();
        if !not_allowed.is_empty() {
            return Err(AuthorityError::Refused(format!(
                "the request asks for names this authority does not certify: {}; allowed are \
                 {} (change them with `liutong authority names`, or ask the member for a new \
                 request without them)",
                not_allowed.join(", "),
                rules.describe()
            )));
        }
        let wanted = request.names();
        for (holder, held) in &self.state.host_names {
            if holder == id {
                continue;
            }
            // Loopback names are every machine's own and certify nothing about a host.
            if let Some(name) = wanted.iter().find(|n| held.contains(n) && !is_loopback(n)) {
                return Err(AuthorityError::Refused(format!(
                    "{name} is already certified for {holder}; one name cannot name two members"
                )));
            }
        }
        Ok(wanted)
    }

    /// Revokes a member. Nodes refuse it from their next trust-list refresh on.
    pub fn revoke(
        &mut self,
        participant: &ParticipantId,
        reason: &str,
        now: i64,
    ) -> Result<Revocation, AuthorityError> {
        if reason.trim().is_empty() {
            return Err(AuthorityError::Invalid(
                "say why in --reason; members and auditors will read it".into(),
            ));
        }
        let _lock = self.lock()?;
        self.state = read_state(&self.dir.join(STATE_FILE))?;
        let index = self
            .state
            .members
            .iter()
            .position(|m| &m.participant_id == participant)
            .ok_or_else(|| AuthorityError::NotMember(participant.clone()))?;
        let member = self.state.members.remove(index);
        self.state.host_names.remove(participant);
        let revocation = Revocation {
            participant_id: participant.clone(),
            reason: reason.trim().to_owned(),
            revoked_at: now,
            certificate_sha256: member.certificate_sha256,
        };
        self.state.revocations.push(revocation.clone());
        self.state.sequence += 1;
        self.save_state()?;
        Ok(revocation)
    }

    /// Issues a member a credential naming a new signing key that its node prepared
    /// (`liutong key rotate`), keeping every other attribute and its certificate. The
    /// next trust list carries the new key.
    pub fn rekey(
        &mut self,
        participant: &ParticipantId,
        signing_key: PublicKey,
    ) -> Result<Envelope, AuthorityError> {
        let _lock = self.lock()?;
        self.state = read_state(&self.dir.join(STATE_FILE))?;
        let member = self
            .state
            .members
            .iter_mut()
            .find(|m| &m.participant_id == participant)
            .ok_or_else(|| AuthorityError::NotMember(participant.clone()))?;
        if member.signing_key == signing_key {
            return Err(AuthorityError::Invalid(format!(
                "{participant} already signs with this key; send the key that `liutong key \
                 rotate` printed on the member's node"
            )));
        }
        member.signing_key = signing_key;
        let credential = Envelope::sign_json(MEMBERSHIP_PAYLOAD_TYPE, &*member, &self.signing)?;
        self.state.sequence += 1;
        self.save_state()?;
        Ok(credential)
    }
}

/// Whether a certificate name means "this machine" wherever it is used.
fn is_loopback(name: &str) -> bool {
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl AdmissionBundle {
    /// Writes the bundle into `out` (created owner-only; must be new or empty).
    pub fn write(&self, out: &Path) -> Result<(), AuthorityError> {
        if out.exists()
            && std::fs::read_dir(out)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            return Err(AuthorityError::OutputExists(out.to_owned()));
        }
        files::create_private_dir(out).map_err(|source| AuthorityError::Io {
            path: out.to_owned(),
            source,
        })?;
        let io = |path: PathBuf| move |source| AuthorityError::Io { path, source };
        let manifest = BundleManifest {
            participant_id: self.membership.participant_id.clone(),
            name: self.membership.name.clone(),
            authority_name: self.authority_name.clone(),
            authority_key: self.authority_key,
        };
        let p = out.join(bundle_files::MANIFEST);
        files::write_public(
            &p,
            &serde_json::to_vec_pretty(&manifest).expect("manifest serializes"),
        )
        .map_err(io(p.clone()))?;
        let p = out.join(bundle_files::CA);
        files::write_public(&p, self.ca_pem.as_bytes()).map_err(io(p.clone()))?;
        self.certificate.save(&out.join(bundle_files::CERT))?;
        let p = out.join(bundle_files::CREDENTIAL);
        files::write_public(&p, self.credential.to_json().as_bytes()).map_err(io(p.clone()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::identity::SigningKey;
    use crate::identity::request::HostName;
    use crate::trust::{TRUST_LIST_PAYLOAD_TYPE, TrustList};

    fn admission(id: &str) -> Admission {
        let now = OffsetDateTime::now_utc();
        Admission {
            participant: ParticipantId::parse(id).unwrap(),
            name: "Hangzhou Transport Bureau".into(),
            kind: ParticipantKind::Government,
            sector: "transport".into(),
            region: RegionCode::parse("330100").unwrap(),
            roles: vec![MemberRole::Provider, MemberRole::Consumer],
            not_before: now,
            not_after: now + time::Duration::days(30),
            renew: false,
        }
    }

    /// A member node's request, as `liutong join` makes it.
    fn request(id: &str, dns: &[&str], ips: &[&str]) -> AdmissionRequest {
        let participant = ParticipantId::parse(id).unwrap();
        let names = HostNames {
            dns: dns.iter().map(|d| d.to_string()).collect(),
            ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
        };
        let tls = certs::tls_key_request("node", &participant.san_uri(), &names).unwrap();
        AdmissionRequest {
            participant_id: participant,
            csr_pem: tls.csr_pem,
            signing_key: SigningKey::generate().unwrap().public_key(),
            dns_names: dns.iter().map(|d| HostName::parse(d).unwrap()).collect(),
            ip_addresses: names.ips,
            created_at: 0,
        }
    }

    const ID: &str = "91110000600037341L";
    const OTHER: &str = "91330100MA2L0G0013";

    #[test]
    fn admits_writes_bundle_and_revokes() {
        let dir = tempfile::tempdir().unwrap();
        let adir = dir.path().join("authority");
        let mut a = Authority::init(&adir, "Zhejiang Data Space").unwrap();
        assert!(matches!(
            Authority::init(&adir, "again"),
            Err(AuthorityError::AlreadyExists(_))
        ));
        let req = request(ID, &["localhost"], &["127.0.0.1", "::1"]);
        let bundle = a.admit(admission(ID), &req).unwrap();
        assert_eq!(a.sequence(), 2);
        let out = dir.path().join("bundle");
        bundle.write(&out).unwrap();
        let mut written: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        written.sort();
        let mut expected = bundle_files::ALL.map(str::to_owned).to_vec();
        expected.sort();
        assert_eq!(written, expected, "a bundle holds exactly its public files");
        assert!(matches!(
            bundle.write(&out),
            Err(AuthorityError::OutputExists(_))
        ));

        // The credential is signed by the authority, names the requested signing key and
        // the certificate, which certifies the requested names.
        let cred: Membership = bundle
            .credential
            .open_json(MEMBERSHIP_PAYLOAD_TYPE, &a.public_key())
            .unwrap();
        assert_eq!(cred.signing_key, req.signing_key);
        assert_eq!(
            cred.certificate_sha256,
            certs::fingerprint(&bundle.certificate.cert_der)
        );
        let names = certs::host_names(&bundle.certificate.cert_der).unwrap();
        assert_eq!(names.dns, vec!["localhost".to_owned()]);
        assert_eq!(names.ips.len(), 2);
        assert_eq!(
            certs::san_uris(&bundle.certificate.cert_der).unwrap(),
            vec![ParticipantId::parse(ID).unwrap().san_uri()]
        );

        assert!(matches!(
            a.admit(admission(ID), &req),
            Err(AuthorityError::AlreadyMember(_))
        ));
        let id = ParticipantId::parse(ID).unwrap();
        a.revoke(&id, "left the data space", 1).unwrap();
        assert!(a.members().is_empty());
        assert!(matches!(
            a.admit(admission(ID), &req),
            Err(AuthorityError::Revoked { .. })
        ));

        // Another process opening the directory sees the same state.
        let again = Authority::open(&adir).unwrap();
        assert_eq!(again.sequence(), 3);
        assert_eq!(again.revocations().len(), 1);
        let list: TrustList = again
            .trust_list(100, Duration::from_secs(600))
            .unwrap()
            .open_json(TRUST_LIST_PAYLOAD_TYPE, &again.public_key())
            .unwrap();
        assert_eq!((list.sequence, list.expires_at), (3, 700));
    }

    #[test]
    fn refuses_requests_it_should_not_certify() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Authority::init(dir.path(), "DS").unwrap();
        let unchanged = |a: &Authority| (a.sequence(), a.members().len());
        let before = unchanged(&a);

        // Another participant's request.
        let err = a
            .admit(admission(ID), &request(OTHER, &[], &[]))
            .unwrap_err();
        assert!(err.to_string().contains(OTHER), "{err}");

        // Names outside the rules (loopback by default).
        let err = a
            .admit(
                admission(ID),
                &request(ID, &["node.example.cn"], &["10.0.0.1"]),
            )
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("node.example.cn")
                && text.contains("10.0.0.1")
                && text.contains("localhost"),
            "{text}"
        );

        // A CSR asking for other names than the request states.
        let mut req = request(ID, &["localhost"], &[]);
        req.dns_names.clear();
        let err = a.admit(admission(ID), &req).unwrap_err();
        assert!(err.to_string().contains("DNS:localhost"), "{err}");

        // A CSR whose signature does not hold.
        let mut req = request(ID, &[], &[]);
        let der = crate::identity::keys::pem_decode(&req.csr_pem, "CERTIFICATE REQUEST").unwrap();
        let mut bad = der.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        req.csr_pem = crate::identity::keys::pem_encode("CERTIFICATE REQUEST", &bad);
        let err = a.admit(admission(ID), &req).unwrap_err();
        assert!(err.to_string().contains("signature"), "{err}");

        let mut no_roles = admission(ID);
        no_roles.roles.clear();
        assert!(
            a.admit(no_roles, &request(ID, &[], &[]))
                .unwrap_err()
                .to_string()
                .contains("--roles")
        );
        assert_eq!(unchanged(&a), before, "nothing was admitted");
        assert_eq!(unchanged(&Authority::open(dir.path()).unwrap()), before);
        assert!(matches!(
            Authority::open(&dir.path().join("nothing")),
            Err(AuthorityError::Missing(_))
        ));
    }

    #[test]
    fn one_name_one_member_and_one_key_one_member() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Authority::init(dir.path(), "DS").unwrap();
        a.set_name_rules(NameRules::parse(&[".hz.gov.cn".into()], &[]).unwrap())
            .unwrap();
        let first = request(ID, &["data.hz.gov.cn"], &[]);
        a.admit(admission(ID), &first).unwrap();
        let err = a
            .admit(admission(OTHER), &request(OTHER, &["data.hz.gov.cn"], &[]))
            .unwrap_err();
        assert!(err.to_string().contains("already certified for"), "{err}");
        let mut same_key = request(OTHER, &["other.hz.gov.cn"], &[]);
        same_key.signing_key = first.signing_key;
        let err = a.admit(admission(OTHER), &same_key).unwrap_err();
        assert!(err.to_string().contains("own keys"), "{err}");
        a.admit(admission(OTHER), &request(OTHER, &["other.hz.gov.cn"], &[]))
            .unwrap();
        // A renewal may keep its own names.
        let mut renew = admission(ID);
        renew.renew = true;
        a.admit(renew, &request(ID, &["data.hz.gov.cn"], &[]))
            .unwrap();
    }
}
