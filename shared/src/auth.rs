//! Bearer JWTs: HS256 only, `exp` required, issuer and audience checked when configured.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};

/// jsonwebtoken's cryptography for the one algorithm we accept, HS256, with RustCrypto's `hmac`
/// (the crate webhook signatures use). Its built-in backends are aws-lc-rs (a long C build the
/// local quick start would pay for) or the whole RustCrypto set (RSA, ECDSA, Ed25519) that an
/// HS256-only service never calls. Any other algorithm is refused here as well as by the
/// `Validation`.
mod hs256 {
    use hmac::{Hmac, Mac};
    use jsonwebtoken::crypto::{CryptoProvider, JwkUtils, JwtSigner, JwtVerifier};
    use jsonwebtoken::errors::{ErrorKind, Result};
    use jsonwebtoken::signature::{self, Signer, Verifier};
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
    use sha2::Sha256;

    struct Hs256(Hmac<Sha256>);

    impl Hs256 {
        fn new(alg: &Algorithm, secret: Result<&[u8]>) -> Result<Hs256> {
            if *alg != Algorithm::HS256 {
                return Err(ErrorKind::InvalidAlgorithm.into());
            }
            Hmac::new_from_slice(secret?)
                .map(Hs256)
                .map_err(|_| ErrorKind::InvalidKeyFormat.into())
        }
    }

    impl Signer<Vec<u8>> for Hs256 {
        fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
            let mut mac = self.0.clone();
            mac.update(msg);
            Ok(mac.finalize().into_bytes().to_vec())
        }
    }

    impl Verifier<Vec<u8>> for Hs256 {
        fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> std::result::Result<(), signature::Error> {
            let mut mac = self.0.clone();
            mac.update(msg);
            // Constant-time comparison.
            mac.verify_slice(sig).map_err(|_| signature::Error::new())
        }
    }

    impl JwtSigner for Hs256 {
        fn algorithm(&self) -> Algorithm {
            Algorithm::HS256
        }
    }

    impl JwtVerifier for Hs256 {
        fn algorithm(&self) -> Algorithm {
            Algorithm::HS256
        }
    }

    static PROVIDER: CryptoProvider = CryptoProvider {
        signer_factory: |alg, key: &EncodingKey| Ok(Box::new(Hs256::new(alg, key.try_get_hmac_secret())?)),
        verifier_factory: |alg, key: &DecodingKey| Ok(Box::new(Hs256::new(alg, key.try_get_hmac_secret())?)),
        jwk_utils: JwkUtils::new_unimplemented(),
    };

    /// Before the first token is signed or verified. A provider installed earlier (a test that
    /// forges tokens with jsonwebtoken's own backend) is kept: it computes the same HS256.
    pub fn install() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let _ = PROVIDER.install_default();
        });
    }
}

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Tenant ids are 1 to this many bytes, printable, without `#` (a key delimiter).
pub const MAX_TENANT_LEN: usize = 256;

/// Who is calling: the tenant owns what it creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: crate::messages::Tenant,
    pub subject: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed Authorization header; expected 'Bearer <token>'")]
    Malformed,
    #[error("token is too long")]
    TooLong,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token is invalid: {0}")]
    Invalid(&'static str),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
}

/// RFC 7519 allows `aud` to be one string or an array of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier").finish_non_exhaustive()
    }
}

impl JwtVerifier {
    pub fn new(secret: &[u8], issuer: Option<&str>, audience: Option<&str>) -> Self {
        hs256::install();
        // Pinning the algorithm list to HS256 is what stops `alg: none` and HS/RS confusion:
        // the header's algorithm must be in this list, and the key is only ever an HMAC key.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        // A configured issuer or audience must be present, not merely right when present.
        let mut required = vec!["exp"];
        if issuer.is_some() {
            required.push("iss");
        }
        if audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = 30;
        match issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        JwtVerifier {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Verifies an `Authorization` header value.
    pub fn verify_header(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let (scheme, token) = header.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Malformed);
        }
        self.verify(token.trim())
    }

    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        use jsonwebtoken::errors::ErrorKind as K;
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::TooLong);
        }
        let data = decode::<Claims>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
            K::ExpiredSignature => AuthError::Expired,
            K::ImmatureSignature => AuthError::NotYetValid,
            K::InvalidSignature => AuthError::Invalid("bad signature"),
            K::InvalidAlgorithm | K::InvalidAlgorithmName => AuthError::Invalid("algorithm not allowed"),
            K::InvalidIssuer => AuthError::Invalid("wrong issuer"),
            K::InvalidAudience => AuthError::Invalid("wrong audience"),
            K::MissingRequiredClaim(_) => AuthError::Invalid("missing required claim"),
            _ => AuthError::Invalid("malformed token"),
        })?;
        let claims = data.claims;
        let tenant = claims
            .tenant
            .as_deref()
            .or(claims.sub.as_deref())
            .ok_or(AuthError::Invalid("no tenant or sub claim"))?;
        let tenant = crate::messages::Tenant::parse(tenant).ok_or(AuthError::Invalid(
            "tenant must be 1-256 printable characters without '#'",
        ))?;
        Ok(Principal {
            tenant,
            subject: claims.sub,
        })
    }
}

/// Mints an HS256 token; the local runner's `token` command and the tests use it.
pub fn mint(secret: &[u8], claims: &Claims) -> String {
    hs256::install();
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap_or_default()
}

pub fn claims_for(sub: &str, tenant: Option<&str>, ttl_seconds: u64) -> Claims {
    Claims {
        sub: Some(sub.to_string()),
        tenant: tenant.map(str::to_string),
        exp: crate::time::now_ms() / 1000 + ttl_seconds,
        iss: None,
        aud: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_falls_back_to_sub() {
        let v = JwtVerifier::new(b"k", None, None);
        let t = mint(b"k", &claims_for("alice", None, 60));
        assert_eq!(v.verify(&t).expect("valid").tenant.as_str(), "alice");
        let t = mint(b"k", &claims_for("alice", Some("acme"), 60));
        assert_eq!(
            v.verify_header(Some(&format!("Bearer {t}")))
                .expect("valid")
                .tenant
                .as_str(),
            "acme"
        );
        assert_eq!(v.verify_header(None), Err(AuthError::Missing));
        assert_eq!(v.verify_header(Some("Basic abc")), Err(AuthError::Malformed));
        let t = mint(b"k", &claims_for("a#b", None, 60));
        assert!(v.verify(&t).is_err());
    }

    #[test]
    fn configured_issuer_and_audience_are_required() {
        let v = JwtVerifier::new(b"k", Some("https://issuer"), Some("webhooks"));
        let mut c = claims_for("alice", None, 60);
        assert_eq!(
            v.verify(&mint(b"k", &c)),
            Err(AuthError::Invalid("missing required claim")),
            "neither iss nor aud"
        );
        c.iss = Some("https://issuer".into());
        assert!(v.verify(&mint(b"k", &c)).is_err(), "aud missing");
        c.aud = Some(Audience::One("webhooks".into()));
        assert!(v.verify(&mint(b"k", &c)).is_ok());
        c.iss = None;
        assert!(v.verify(&mint(b"k", &c)).is_err(), "iss missing");
    }

    #[test]
    fn an_audience_array_containing_ours_is_accepted() {
        let v = JwtVerifier::new(b"k", None, Some("webhooks"));
        let mut c = claims_for("alice", None, 60);
        c.aud = Some(Audience::Many(vec!["other".into(), "webhooks".into()]));
        assert!(v.verify(&mint(b"k", &c)).is_ok());
        c.aud = Some(Audience::Many(vec!["other".into()]));
        assert_eq!(v.verify(&mint(b"k", &c)), Err(AuthError::Invalid("wrong audience")));
        // Without a configured audience, an array is still a well-formed token.
        let open = JwtVerifier::new(b"k", None, None);
        assert!(open.verify(&mint(b"k", &c)).is_ok());
    }
}
