//! Webhook steps: one HTTP request by reqwest. The body is built as JSON
//! (values inserted as JSON strings, never pasted), templated URL parts are
//! percent-encoded behind a literal origin, redirects are not followed, and
//! `secret:` signs the request as the Standard Webhooks spec says.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use super::{StepContext, StepOutcome, StepStatus};
use crate::definitions::model::{BodyTemplate, Step, UrlPiece, WebhookStep};

/// Characters left as they are in a templated value (RFC 3986 unreserved).
const VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The webhook client, built at the first webhook step: an agent with no
/// webhooks never sets up TLS (its crypto provider and certificates).
#[derive(Clone, Default)]
pub struct LazyClient(Arc<OnceLock<Result<reqwest::Client, String>>>);

impl LazyClient {
    pub fn get(&self) -> Result<&reqwest::Client, &str> {
        self.0
            .get_or_init(|| {
                let _ = rustls::crypto::ring::default_provider().install_default();
                reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .connect_timeout(Duration::from_secs(10))
                    .build()
                    .map_err(|e| format!("building the HTTP client: {e}"))
            })
            .as_ref()
            .map_err(String::as_str)
    }
}

pub async fn execute(
    ctx: &StepContext,
    step: &Step,
    hook: &WebhookStep,
    timeout: Option<Duration>,
) -> StepOutcome {
    let request = match build(ctx, step, hook) {
        Ok(r) => r,
        Err(e) => return StepOutcome::fatal(e),
    };
    let limit = timeout.map_or(hook.timeout, |t| t.min(hook.timeout));
    let method =
        reqwest::Method::from_bytes(hook.method.as_bytes()).unwrap_or(reqwest::Method::POST);
    let http = match ctx.http.get() {
        Ok(c) => c,
        Err(e) => return StepOutcome::fatal(e.to_owned()),
    };
    let mut req = http.request(method, &request.url).timeout(limit);
    for (k, v) in &request.headers {
        req = req.header(k, v);
    }
    if let Some(body) = &request.body {
        req = req
            .header("content-type", "application/json")
            .body(body.clone());
    }
    let response = match req.send().await {
        Ok(r) => r,
        Err(e) => return failed(ctx, hook, &request.url, "the request", &e),
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let (bytes, cut) = match read_head(response, ctx.output_cap).await {
        Ok(read) => read,
        Err(e) => return failed(ctx, hook, &request.url, "reading the answer", &e),
    };
    // A cut answer is not the JSON it began as.
    let parsed: Value = if cut {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    };
    let text = if cut {
        format!(
            "{}\n[nexusd: the answer was cut after {} bytes (--output-cap); the rest was not read]",
            String::from_utf8_lossy(&bytes),
            bytes.len()
        )
    } else {
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let output = json!({"status": status.as_u16(), "body": ctx.redact(&text), "json": parsed});
    if status.is_success() {
        return StepOutcome {
            stdout: ctx.redact(&text),
            ..StepOutcome::success(output)
        };
    }
    let code = status.as_u16();
    StepOutcome {
        status: StepStatus::Failed,
        stdout: ctx.redact(&text),
        output,
        error: Some(format!(
            "{} {} answered {status}",
            hook.method,
            ctx.redact(&request.url)
        )),
        // A client error will not change on retry, except these two.
        retryable: !(400..500).contains(&code) || code == 408 || code == 429,
        retry_after,
        ..StepOutcome::fatal("")
    }
}

/// A request that failed on the way (`during` it): timed out, or the
/// transport's error; worth a retry.
fn failed(
    ctx: &StepContext,
    hook: &WebhookStep,
    url: &str,
    during: &str,
    e: &reqwest::Error,
) -> StepOutcome {
    let what = if e.is_timeout() {
        format!("{during} timed out")
    } else {
        format!("{during} failed: {}", error_chain(e))
    };
    StepOutcome::transient(format!("{} {}: {what}", hook.method, ctx.redact(url)))
}

/// Reads an answer's body up to `cap` bytes and no further: the rest is
/// never read (the connection is dropped), so an answer of any length, or
/// an endless one, costs at most `cap` of memory. True when it was cut.
async fn read_head(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let hint = response.content_length().unwrap_or(0);
    let mut kept = Vec::with_capacity(usize::try_from(hint).unwrap_or(cap).min(cap));
    while let Some(chunk) = response.chunk().await? {
        let room = cap - kept.len();
        if chunk.len() > room {
            kept.extend_from_slice(&chunk[..room]);
            return Ok((kept, true));
        }
        kept.extend_from_slice(&chunk);
    }
    Ok((kept, false))
}

struct Request {
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

fn build(ctx: &StepContext, step: &Step, hook: &WebhookStep) -> Result<Request, String> {
    let fail = |e: crate::templates::TemplateError| format!("step `{}`: {e}", step.name);
    let mut url = hook.origin.clone();
    for piece in &hook.target {
        match piece {
            UrlPiece::Literal(text) => url.push_str(text),
            UrlPiece::Value(t) => {
                let value = t.render(&ctx.data).map_err(fail)?;
                url.extend(utf8_percent_encode(&value, VALUE));
            }
        }
    }
    let body = match &hook.body {
        Some(b) => Some(
            serde_json::to_vec(&render_body(ctx, b).map_err(fail)?).map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let mut headers = Vec::new();
    for (name, t) in &hook.headers {
        headers.push((name.clone(), t.render(&ctx.data).map_err(fail)?));
    }
    // Receivers dedupe retried deliveries of one step of one run by this.
    let message_id = format!("{}:{}", ctx.run_id, step.name);
    headers.push(("idempotency-key".to_owned(), message_id.clone()));
    if let Some(name) = &hook.secret {
        let secret = ctx
            .secrets
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| format!("secret `{name}` has no value"))?;
        let timestamp = crate::events::now_ms() / 1000;
        let payload = body.as_deref().unwrap_or_default();
        headers.push(("webhook-id".to_owned(), message_id.clone()));
        headers.push(("webhook-timestamp".to_owned(), timestamp.to_string()));
        headers.push((
            "webhook-signature".to_owned(),
            sign(secret, &message_id, timestamp, payload),
        ));
    }
    Ok(Request { url, headers, body })
}

fn render_body(
    ctx: &StepContext,
    b: &BodyTemplate,
) -> Result<Value, crate::templates::TemplateError> {
    Ok(match b {
        BodyTemplate::Literal(v) => v.clone(),
        BodyTemplate::String(t) => Value::String(t.render(&ctx.data)?),
        BodyTemplate::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| render_body(ctx, i))
                .collect::<Result<_, _>>()?,
        ),
        BodyTemplate::Object(entries) => {
            let mut m = Map::new();
            for (k, v) in entries {
                m.insert(k.clone(), render_body(ctx, v)?);
            }
            Value::Object(m)
        }
    })
}

/// `v1,BASE64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))`. A secret in the
/// spec's `whsec_BASE64` form is decoded; any other value is the key as is.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|k| b64.decode(k).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec());
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("hmac accepts any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", b64.encode(mac.finalize().into_bytes()))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
