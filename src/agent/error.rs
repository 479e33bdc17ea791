//! The agent's answers when it gives no credentials: the EKS agent's status codes, each with a
//! `{"Code","Message"}` body the SDKs show to the user.

use super::review::TokenReviewError;
use super::sts::StsError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// Missing or unreadable token, or a request STS found invalid: 400.
    #[error("{1}")]
    BadRequest(&'static str, String),
    /// The token or the role was refused: 403.
    #[error("{0}")]
    AccessDenied(String),
    /// The ServiceAccount has no Pod Identity association: 404.
    #[error("{0}")]
    NotFound(String),
    /// Too many requests (this client, or STS throttling the agent): 429.
    #[error("{0}")]
    Throttled(String),
    /// The Kubernetes API, the identity source or STS could not answer in time: 503.
    #[error("{0}")]
    Unavailable(String),
}

impl AgentError {
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(..) => 400,
            Self::AccessDenied(_) => 403,
            Self::NotFound(_) => 404,
            Self::Throttled(_) => 429,
            Self::Unavailable(_) => 503,
        }
    }

    /// The `Code` of the body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(code, _) => code,
            Self::AccessDenied(_) => "AccessDenied",
            Self::NotFound(_) => "ResourceNotFound",
            Self::Throttled(_) => "ThrottlingException",
            Self::Unavailable(_) => "ServiceUnavailable",
        }
    }

    /// The `outcome` label of the request metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::BadRequest(..) => "bad_request",
            Self::AccessDenied(_) => "access_denied",
            Self::NotFound(_) => "not_found",
            Self::Throttled(_) => "throttled",
            Self::Unavailable(_) => "unavailable",
        }
    }

    /// `{"Code":…,"Message":…}`.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"Code": self.code(), "Message": self.to_string()}))
            .expect("a JSON object of strings serialises")
    }
}

impl From<TokenReviewError> for AgentError {
    fn from(e: TokenReviewError) -> Self {
        match e {
            TokenReviewError::Denied(m) => Self::AccessDenied(m),
            TokenReviewError::Unavailable(m) => Self::Unavailable(m),
        }
    }
}

impl From<StsError> for AgentError {
    fn from(e: StsError) -> Self {
        let message = e.to_string();
        match e {
            StsError::AccessDenied(_) => Self::AccessDenied(message),
            StsError::Invalid(_) => Self::BadRequest("InvalidParameterException", message),
            StsError::Throttled(_) => Self::Throttled(message),
            StsError::Unavailable(_) => Self::Unavailable(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_codes_and_bodies() {
        let e = AgentError::from(StsError::AccessDenied("AccessDenied: not trusted".into()));
        assert_eq!((e.status(), e.code()), (403, "AccessDenied"));
        let body: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(body["Code"], "AccessDenied");
        assert_eq!(body["Message"], "STS refused: AccessDenied: not trusted");
        assert_eq!(
            AgentError::from(StsError::Throttled(String::new())).status(),
            429
        );
        assert_eq!(
            AgentError::from(StsError::Unavailable(String::new())).status(),
            503
        );
        assert_eq!(
            AgentError::from(StsError::Invalid(String::new())).status(),
            400
        );
        assert_eq!(
            AgentError::NotFound(String::new()).code(),
            "ResourceNotFound"
        );
    }
}
