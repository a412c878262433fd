//! Basic auth and response headers of the web config, as a middleware in front of
//! every route.
//!
//! bcrypt is slow on purpose (tens of ms on a PC, hundreds on a Pi at cost 10), so a
//! check runs on the blocking pool, at most [`BCRYPT_SLOTS`] at once, and a password
//! that matched is remembered (by a SHA-256 of user, hash and password, as
//! exporter-toolkit does) so a scraper's every request does not pay for it again.
//! An unknown user costs a bcrypt run too, so timing does not tell which users exist.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::web_config::WebConfigHandle;

/// bcrypt checks running at once; more wait (their connections count against the cap).
pub const BCRYPT_SLOTS: usize = 2;
/// Passwords remembered as good; the set starts over when full.
const CACHE_ENTRIES: usize = 256;

/// The middleware's state.
#[derive(Debug)]
pub(crate) struct Auth {
    web: WebConfigHandle,
    good: Mutex<HashSet<[u8; 32]>>,
    slots: Semaphore,
}

impl Auth {
    pub(crate) fn new(web: WebConfigHandle) -> Arc<Auth> {
        Arc::new(Auth {
            web,
            good: Mutex::new(HashSet::new()),
            slots: Semaphore::new(BCRYPT_SLOTS),
        })
    }

    fn remembered(&self, key: &[u8; 32]) -> bool {
        self.good
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(key)
    }

    fn remember(&self, key: [u8; 32]) {
        let mut good = self.good.lock().unwrap_or_else(|e| e.into_inner());
        if good.len() >= CACHE_ENTRIES {
            good.clear();
        }
        good.insert(key);
    }

    /// Whether `authorization` carries a user and password of the file.
    async fn allowed(
        &self,
        users: &std::collections::BTreeMap<String, String>,
        authorization: Option<&HeaderValue>,
    ) -> bool {
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return false;
        };
        let (hash, known) = match users.get(&user) {
            Some(hash) => (hash.clone(), true),
            // Any hash of the file, to spend the same time as for a known user.
            None => match users.values().next() {
                Some(hash) => (hash.clone(), false),
                None => return false,
            },
        };
        let key: [u8; 32] = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(hash.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .finalize()
            .into();
        if known && self.remembered(&key) {
            return true;
        }
        let Ok(_slot) = self.slots.acquire().await else {
            return false;
        };
        let matched = tokio::task::spawn_blocking(move || {
            bcrypt::verify(password.as_bytes(), &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if matched && known {
            self.remember(key);
        }
        matched && known
    }
}

/// `Basic base64(user:password)` → (user, password).
fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let value = value.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// The middleware: 401 without the right user and password (when the file has users),
/// the file's headers on every answer.
pub(crate) async fn check(auth: Arc<Auth>, request: Request, next: Next) -> Response {
    let config = auth.web.current();
    let users = &config.settings.users;
    let mut response = if users.is_empty()
        || auth
            .allowed(users, request.headers().get(header::AUTHORIZATION))
            .await
    {
        next.run(request).await
    } else {
        let mut r = (StatusCode::UNAUTHORIZED, Body::from("Unauthorized\n")).into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"nodewatch\""),
        );
        r
    };
    for (name, value) in &config.settings.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_decoded() {
        let v = HeaderValue::from_static("Basic dXNlcjpwYTpzcw==");
        assert_eq!(basic_credentials(&v), Some(("user".into(), "pa:ss".into())));
        assert_eq!(
            basic_credentials(&HeaderValue::from_static("Bearer x")),
            None
        );
        assert_eq!(
            basic_credentials(&HeaderValue::from_static("Basic !!!")),
            None
        );
    }
}
