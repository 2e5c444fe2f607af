//! The HTTP client object_store sends its requests through: difflog's own
//! ([`Http::exchange`]), so requests to a bucket get the same connection
//! pool, `--max-rate` pacing, retries with the shared backoff and
//! `Retry-After`, bounded answers and redacted errors as every other upload.
//! object_store builds and signs each request; this only carries it.

use crate::sync::error::SyncError;
use crate::sync::http::Http;
use http_body_util::BodyExt;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse,
    HttpResponseBody, HttpService,
};
use object_store::ClientOptions;

/// Hands object_store a client that sends through `Http`.
#[derive(Debug, Clone)]
pub(super) struct Connector(pub(super) Http);

impl HttpConnector for Connector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(Service(self.0.clone())))
    }
}

/// One store's client.
#[derive(Debug)]
struct Service(Http);

#[async_trait::async_trait]
impl HttpService for Service {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (parts, body) = req.into_parts();
        // Bodies are in memory already (a part is at most a few MiB).
        let bytes = body.collect().await?.to_bytes();
        let url = parts.uri.to_string();
        match self
            .0
            .exchange(parts.method, &url, &parts.headers, bytes)
            .await
        {
            Ok((status, headers, body)) => {
                let mut resp = HttpResponse::new(HttpResponseBody::from(body));
                *resp.status_mut() = status;
                *resp.headers_mut() = headers;
                Ok(resp)
            }
            Err(e) => {
                let kind = if e.unreachable {
                    HttpErrorKind::Connect
                } else {
                    HttpErrorKind::Request
                };
                Err(HttpError::new(kind, e))
            }
        }
    }
}

/// The [`SyncError`] a failed request of [`Service`] carried, if `e` came
/// from one (it keeps its class, status and `Retry-After`).
pub(super) fn sync_error_in(e: &(dyn std::error::Error + 'static)) -> Option<SyncError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(s) = c.downcast_ref::<SyncError>() {
            return Some(s.clone());
        }
        cur = c.source();
    }
    None
}
