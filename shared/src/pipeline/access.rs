//! The vendor client behind the steps, with the credential renewed when the vendor refuses it.

use super::error::StepError;
use crate::cxone::{AuthError, CxOneClient, VendorConfig, VendorError};
use crate::secret::SecretSource;

/// The vendor client with the credential behind it: rebuilt once with a re-read secret when the
/// vendor rejects the credential, so a rotated key is picked up mid-run.
pub struct VendorAccess {
    config: VendorConfig,
    secret: SecretSource,
    client: tokio::sync::RwLock<CxOneClient>,
    /// When the secret was last re-read, and what came of it ([`Renewal::stands_for`]): a
    /// long-lived process still picks up each later rotation. Held across the read: callers that
    /// meet the refusal meanwhile wait for its outcome.
    last_renewal: tokio::sync::Mutex<Option<(std::time::Instant, Renewal)>>,
}

impl VendorAccess {
    pub async fn new(config: VendorConfig, secret: SecretSource) -> Result<Self, StepError> {
        let credential = secret.credential().await?;
        let client = CxOneClient::new(config.clone(), &credential)?;
        Ok(Self {
            config,
            secret,
            client: tokio::sync::RwLock::new(client),
            last_renewal: tokio::sync::Mutex::new(None),
        })
    }

    /// How many vendor requests may be in flight at once.
    pub fn concurrency(&self) -> usize {
        self.config.concurrency
    }

    pub async fn client(&self) -> CxOneClient {
        self.client.read().await.clone()
    }

    /// After the vendor refused the credential: re-read the secret once and rebuild the client.
    async fn renew(&self) -> Renewal {
        let mut last = self.last_renewal.lock().await;
        if let Some((at, outcome)) = &*last
            && at.elapsed() < outcome.stands_for()
        {
            return outcome.clone();
        }
        let outcome = match self.secret.refresh().await {
            Ok(credential) => match CxOneClient::new(self.config.clone(), &credential) {
                Ok(client) => {
                    *self.client.write().await = client;
                    tracing::info!("credential re-read after the vendor refused it");
                    Renewal::Renewed
                }
                Err(_) => Renewal::NotRenewed,
            },
            Err(error) if error.may_pass() => Renewal::SecretUnread(error.to_string()),
            Err(_) => Renewal::NotRenewed,
        };
        *last = Some((std::time::Instant::now(), outcome.clone()));
        outcome
    }
}

/// What re-reading the secret came to.
#[derive(Clone)]
enum Renewal {
    /// The client was rebuilt from it (within the minute: by another caller): try again.
    Renewed,
    /// Not read (refused), or no client built from it: the vendor's refusal stands.
    NotRenewed,
    /// Secrets Manager did not give it for now.
    SecretUnread(String),
}

impl Renewal {
    /// How long the outcome answers later callers: a minute, so a refused credential does not
    /// hammer the secret store; a secret not given for now, only the callers that met the
    /// refusal at the same moment (the items of a group), not the step's next attempt.
    fn stands_for(&self) -> std::time::Duration {
        match self {
            Renewal::SecretUnread(_) => std::time::Duration::from_secs(1),
            Renewal::Renewed | Renewal::NotRenewed => std::time::Duration::from_secs(60),
        }
    }
}

pub(super) fn credential_refused(error: &VendorError) -> bool {
    matches!(
        error,
        VendorError::Unauthorized { .. }
            | VendorError::Auth(
                AuthError::BadApiKey { .. }
                    | AuthError::ExpiredApiKey { .. }
                    | AuthError::BadClientCredentials { .. }
            )
    )
}

/// An error that may say the vendor refused the credential (so renewing it may help).
pub(super) trait MayRefuseCredential: std::fmt::Display {
    fn credential_refused(&self) -> bool;
    /// The vendor refused the credential (`refused`) and the secret could not be read again for
    /// now (`problem`).
    fn secret_unread(refused: String, problem: String) -> Self;
}

impl MayRefuseCredential for VendorError {
    fn credential_refused(&self) -> bool {
        credential_refused(self)
    }

    fn secret_unread(refused: String, problem: String) -> Self {
        VendorError::SecretUnread { refused, problem }
    }
}

/// Runs `attempt`; when the vendor refused the credential, re-reads the secret once and tries again.
pub(super) async fn with_renewal<T, E, F, Fut>(vendor: &VendorAccess, attempt: F) -> Result<T, E>
where
    E: MayRefuseCredential,
    F: Fn(CxOneClient) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    match attempt(vendor.client().await).await {
        Err(error) if error.credential_refused() => match vendor.renew().await {
            Renewal::Renewed => attempt(vendor.client().await).await,
            Renewal::NotRenewed => Err(error),
            Renewal::SecretUnread(problem) => Err(E::secret_unread(error.to_string(), problem)),
        },
        other => other,
    }
}
