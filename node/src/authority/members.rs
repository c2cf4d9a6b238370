//! Admitting, revoking and re-keying members: each change issues what the member
//! needs (keys, a certificate, a signed credential, written out as an admission bundle)
//! and bumps the trust-list sequence, so nodes see it at their next refresh.

use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::store::{STATE_FILE, read_state};
use super::{Authority, AuthorityError};
use crate::base::files;
use crate::identity::bundle::{BundleManifest, files as bundle_files};
use crate::identity::membership::MEMBERSHIP_PAYLOAD_TYPE;
use crate::identity::{
    Envelope, MemberRole, Membership, ParticipantId, ParticipantKind, PublicKey, RegionCode,
    SigningKey,
};
use crate::tls::certs::{self, LeafSpec};
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
    /// Replace an existing membership (new keys and certificate).
    pub renew: bool,
}

/// An admitted member's keys, certificate and signed credential, to hand over to the
/// member's IT staff. It contains private keys: transfer it as a secret.
pub struct AdmissionBundle {
    pub membership: Membership,
    pub credential: Envelope,
    pub certificate: certs::IssuedCertificate,
    pub signing_key: SigningKey,
    pub ca_pem: String,
    pub authority_name: String,
    pub authority_key: PublicKey,
}

impl std::fmt::Debug for AdmissionBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No key material in debug output.
        f.debug_struct("AdmissionBundle")
            .field("membership", &self.membership)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// Admits a member: new keys, a TLS certificate naming `urn:uscc:<id>`, and a signed
    /// membership credential. The state is saved before the bundle is returned.
    pub fn admit(&mut self, admission: Admission) -> Result<AdmissionBundle, AuthorityError> {
        let _lock = self.lock()?;
        // Another process may have changed the state since this one opened it.
        self.state = read_state(&self.dir.join(STATE_FILE))?;
        let id = &admission.participant;
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
        let certificate = self.ca.issue(&LeafSpec {
            common_name: format!("{} ({})", admission.name, id),
            san_uris: vec![id.san_uri()],
            not_before: admission.not_before,
            not_after: admission.not_after,
        })?;
        let signing_key = SigningKey::generate()?;
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
            signing_key: signing_key.public_key(),
            certificate_sha256: certs::fingerprint(&certificate.cert_der),
            authority: self.state.name.clone(),
        };
        let credential = Envelope::sign_json(MEMBERSHIP_PAYLOAD_TYPE, &membership, &self.signing)?;
        match existing {
            Some(i) => self.state.members[i] = membership.clone(),
            None => self.state.members.push(membership.clone()),
        }
        self.state.sequence += 1;
        self.save_state()?;
        Ok(AdmissionBundle {
            membership,
            credential,
            certificate,
            signing_key,
            ca_pem: self.ca.cert_pem().to_owned(),
            authority_name: self.state.name.clone(),
            authority_key: self.signing.public_key(),
        })
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
        self.certificate
            .save(&out.join(bundle_files::CERT), &out.join(bundle_files::KEY))?;
        self.signing_key
            .save(&out.join(bundle_files::SIGNING_KEY))?;
        let p = out.join(bundle_files::CREDENTIAL);
        files::write_public(&p, self.credential.to_json().as_bytes()).map_err(io(p.clone()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
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

    #[test]
    fn admits_writes_bundle_and_revokes() {
        let dir = tempfile::tempdir().unwrap();
        let adir = dir.path().join("authority");
        let mut a = Authority::init(&adir, "Zhejiang Data Space").unwrap();
        assert!(matches!(
            Authority::init(&adir, "again"),
            Err(AuthorityError::AlreadyExists(_))
        ));
        let bundle = a.admit(admission("91110000600037341L")).unwrap();
        assert_eq!(a.sequence(), 2);
        let out = dir.path().join("bundle");
        bundle.write(&out).unwrap();
        for f in bundle_files::ALL {
            assert!(out.join(f).exists(), "{f} missing");
        }
        files::check_private(&out.join(bundle_files::KEY)).unwrap();
        files::check_private(&out.join(bundle_files::SIGNING_KEY)).unwrap();
        assert!(matches!(
            bundle.write(&out),
            Err(AuthorityError::OutputExists(_))
        ));

        // The credential is signed by the authority and matches the certificate.
        let cred: Membership = bundle
            .credential
            .open_json(MEMBERSHIP_PAYLOAD_TYPE, &a.public_key())
            .unwrap();
        assert_eq!(
            cred.certificate_sha256,
            certs::fingerprint(&bundle.certificate.cert_der)
        );

        assert!(matches!(
            a.admit(admission("91110000600037341L")),
            Err(AuthorityError::AlreadyMember(_))
        ));
        let id = ParticipantId::parse("91110000600037341L").unwrap();
        a.revoke(&id, "left the data space", 1).unwrap();
        assert!(a.members().is_empty());
        assert!(matches!(
            a.admit(admission("91110000600037341L")),
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
    fn refuses_incomplete_admissions() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Authority::init(dir.path(), "DS").unwrap();
        let mut no_roles = admission("91110000600037341L");
        no_roles.roles.clear();
        assert!(
            a.admit(no_roles)
                .unwrap_err()
                .to_string()
                .contains("--roles")
        );
        assert!(matches!(
            Authority::open(&dir.path().join("nothing")),
            Err(AuthorityError::Missing(_))
        ));
    }
}
