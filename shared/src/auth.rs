//! Bearer JWTs: HS256 with a shared secret and RS256 / ES256 with an OIDC issuer's JWKS, `exp`
//! required, issuer and audience checked when configured (always with a JWKS).

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::jwks::Jwks;

/// jsonwebtoken's cryptography. With the `aws` feature (every Lambda build), jsonwebtoken's own
/// aws-lc-rs backend: HS256, and RS256 / ES256 for a JWKS. Without it (the local runner's quick
/// start), HS256 alone with RustCrypto's `hmac` (the crate webhook signatures use), so that build
/// compiles neither aws-lc-sys nor the RustCrypto RSA/ECDSA set; `JWT_JWKS_URL` is refused at
/// startup there (`Config::check`). Any other algorithm is refused here as well as by the
/// `Validation`.
#[cfg(feature = "aws")]
mod hs256 {
    /// jsonwebtoken picks its `aws_lc_rs` backend itself (the `aws` feature enables it).
    pub fn install() {}
}

#[cfg(not(feature = "aws"))]
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

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
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

/// Verifies bearer tokens: HS256 with `JWT_SECRET`, and RS256 / ES256 with the keys of an
/// OIDC issuer's JWKS (`JWT_JWKS_URL`), either or both. Each key verifies one algorithm only
/// (HMAC for the secret, RS256 for RSA keys, ES256 for P-256 keys), chosen by the key, never by
/// the token: that is what stops `alg: none` and HS/RS confusion.
#[derive(Clone)]
pub struct JwtVerifier {
    secret: Option<DecodingKey>,
    jwks: Option<Arc<Jwks>>,
    issuer: Option<String>,
    audience: Option<String>,
    tenant_claim: String,
    /// API Gateway's JWT authorizer verified the token; the claims come with the request.
    api_gateway: bool,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("jwks", &self.jwks)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// The claim that names the tenant unless `JWT_TENANT_CLAIM` says otherwise (else `sub`).
pub const DEFAULT_TENANT_CLAIM: &str = "tenant";

impl JwtVerifier {
    /// HS256 with `secret` only.
    pub fn new(secret: &[u8], issuer: Option<&str>, audience: Option<&str>) -> Self {
        JwtVerifier {
            secret: Some(DecodingKey::from_secret(secret)),
            jwks: None,
            issuer: issuer.map(str::to_string),
            audience: audience.map(str::to_string),
            tenant_claim: DEFAULT_TENANT_CLAIM.to_string(),
            api_gateway: false,
        }
    }

    /// Verifies no token itself: API Gateway's JWT authorizer did, and the api function reads
    /// the claims it passes on in the request context (`AUTH_MODE=api-gateway`).
    pub fn api_gateway() -> Self {
        JwtVerifier {
            secret: None,
            jwks: None,
            issuer: None,
            audience: None,
            tenant_claim: DEFAULT_TENANT_CLAIM.to_string(),
            api_gateway: true,
        }
    }

    pub fn from_api_gateway(&self) -> bool {
        self.api_gateway
    }

    /// The caller named by the claims API Gateway's authorizer verified.
    pub fn principal_from_claims<'a>(&self, claim: impl Fn(&str) -> Option<&'a str>) -> Result<Principal, AuthError> {
        principal(&self.tenant_claim, claim)
    }

    /// RS256 / ES256 with the keys of `jwks`, and HS256 too when `secret` is given. An issuer
    /// and an audience are required: keys of a public IdP sign tokens for every app it serves.
    pub fn with_jwks(secret: Option<&[u8]>, jwks: Arc<Jwks>, issuer: &str, audience: &str) -> Self {
        JwtVerifier {
            secret: secret.map(DecodingKey::from_secret),
            jwks: Some(jwks),
            issuer: Some(issuer.to_string()),
            audience: Some(audience.to_string()),
            tenant_claim: DEFAULT_TENANT_CLAIM.to_string(),
            api_gateway: false,
        }
    }

    /// Reads the tenant from `claim` instead of `tenant` (an IdP's namespaced or custom claim,
    /// e.g. `custom:tenant`); `sub` remains the fallback.
    pub fn tenant_claim(mut self, claim: &str) -> Self {
        self.tenant_claim = claim.to_string();
        self
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        // A configured issuer or audience must be present, not merely right when present.
        let mut required = vec!["exp"];
        if self.issuer.is_some() {
            required.push("iss");
        }
        if self.audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = 30;
        match &self.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &self.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        validation
    }

    /// Verifies an `Authorization` header value.
    pub async fn verify_header(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let (scheme, token) = header.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Malformed);
        }
        self.verify(token.trim()).await
    }

    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        use jsonwebtoken::errors::ErrorKind as K;
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::TooLong);
        }
        hs256::install();
        let header = decode_header(token).map_err(|_| AuthError::Invalid("malformed token"))?;
        let not_allowed = AuthError::Invalid("algorithm not allowed");
        let (key, alg) = match header.alg {
            Algorithm::HS256 => (self.secret.clone().ok_or(not_allowed)?, Algorithm::HS256),
            Algorithm::RS256 | Algorithm::ES256 => {
                let jwks = self.jwks.as_ref().ok_or(not_allowed.clone())?;
                let kid = header.kid.as_deref().ok_or(AuthError::Invalid("token has no kid"))?;
                let key = jwks.key(kid).await.ok_or(AuthError::Invalid("unknown signing key"))?;
                if key.alg != header.alg {
                    return Err(not_allowed);
                }
                (key.key, key.alg)
            }
            _ => return Err(not_allowed),
        };
        let data = decode::<Map<String, Value>>(token, &key, &self.validation(alg)).map_err(|e| match e.kind() {
            K::ExpiredSignature => AuthError::Expired,
            K::ImmatureSignature => AuthError::NotYetValid,
            K::InvalidSignature => AuthError::Invalid("bad signature"),
            K::InvalidAlgorithm | K::InvalidAlgorithmName => AuthError::Invalid("algorithm not allowed"),
            K::InvalidIssuer => AuthError::Invalid("wrong issuer"),
            K::InvalidAudience => AuthError::Invalid("wrong audience"),
            K::MissingRequiredClaim(_) => AuthError::Invalid("missing required claim"),
            _ => AuthError::Invalid("malformed token"),
        })?;
        let claims = &data.claims;
        principal(&self.tenant_claim, |name| claims.get(name).and_then(Value::as_str))
    }
}

/// The caller named by verified claims: the tenant claim (`tenant` unless configured), else
/// `sub`. Also used for the claims API Gateway's JWT authorizer verified.
pub fn principal<'a>(tenant_claim: &str, claim: impl Fn(&str) -> Option<&'a str>) -> Result<Principal, AuthError> {
    let sub = claim("sub");
    let tenant = claim(tenant_claim)
        .or(sub)
        .ok_or(AuthError::Invalid("no tenant or sub claim"))?;
    let tenant = crate::messages::Tenant::parse(tenant).ok_or(AuthError::Invalid(
        "tenant must be 1-256 printable characters without '#'",
    ))?;
    Ok(Principal {
        tenant,
        subject: sub.map(str::to_string),
    })
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

    #[tokio::test]
    async fn tenant_falls_back_to_sub() {
        let v = JwtVerifier::new(b"k", None, None);
        let t = mint(b"k", &claims_for("alice", None, 60));
        assert_eq!(v.verify(&t).await.expect("valid").tenant.as_str(), "alice");
        let t = mint(b"k", &claims_for("alice", Some("acme"), 60));
        assert_eq!(
            v.verify_header(Some(&format!("Bearer {t}")))
                .await
                .expect("valid")
                .tenant
                .as_str(),
            "acme"
        );
        assert_eq!(v.verify_header(None).await, Err(AuthError::Missing));
        assert_eq!(v.verify_header(Some("Basic abc")).await, Err(AuthError::Malformed));
        let t = mint(b"k", &claims_for("a#b", None, 60));
        assert!(v.verify(&t).await.is_err());
    }

    #[tokio::test]
    async fn configured_issuer_and_audience_are_required() {
        let v = JwtVerifier::new(b"k", Some("https://issuer"), Some("webhooks"));
        let mut c = claims_for("alice", None, 60);
        assert_eq!(
            v.verify(&mint(b"k", &c)).await,
            Err(AuthError::Invalid("missing required claim")),
            "neither iss nor aud"
        );
        c.iss = Some("https://issuer".into());
        assert!(v.verify(&mint(b"k", &c)).await.is_err(), "aud missing");
        c.aud = Some(Audience::One("webhooks".into()));
        assert!(v.verify(&mint(b"k", &c)).await.is_ok());
        c.iss = None;
        assert!(v.verify(&mint(b"k", &c)).await.is_err(), "iss missing");
    }

    #[tokio::test]
    async fn an_audience_array_containing_ours_is_accepted() {
        let v = JwtVerifier::new(b"k", None, Some("webhooks"));
        let mut c = claims_for("alice", None, 60);
        c.aud = Some(Audience::Many(vec!["other".into(), "webhooks".into()]));
        assert!(v.verify(&mint(b"k", &c)).await.is_ok());
        c.aud = Some(Audience::Many(vec!["other".into()]));
        assert_eq!(
            v.verify(&mint(b"k", &c)).await,
            Err(AuthError::Invalid("wrong audience"))
        );
        // Without a configured audience, an array is still a well-formed token.
        let open = JwtVerifier::new(b"k", None, None);
        assert!(open.verify(&mint(b"k", &c)).await.is_ok());
    }
}
