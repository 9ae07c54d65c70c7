//! Post expansion: a post given only by its URL is fetched and its readable text and title
//! extracted (readability), within a size and a time bound, from public addresses only.

mod address_policy;
mod readable;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::redirect::Policy;
use reqwest::Url;
use tokio::sync::Semaphore;
use tracing::info;

pub use address_policy::AddressPolicy;

use crate::domain::PostExpanded;
use crate::telemetry::Untrusted;

/// Why a page could not be expanded. Every variant is the client's to fix or retry: the
/// message names the reason without internal detail.
#[derive(Debug, thiserror::Error)]
pub enum ExpansionError {
    #[error("url: {0}")]
    BadUrl(String),
    #[error("url: {0} is a private or local address; only public pages can be fetched")]
    Forbidden(String),
    #[error("the page could not be fetched: {0}")]
    Unreachable(String),
    #[error("the page took longer than {0:?} to fetch")]
    TooSlow(Duration),
    #[error("the page is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the page is not HTML or text ({0})")]
    NotText(String),
    #[error("too many redirects")]
    TooManyRedirects,
    #[error("no readable text was found on the page")]
    Empty,
}

/// A fetched page: its title and readable text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandedPage {
    pub final_url: String,
    pub title: String,
    pub expanded: PostExpanded,
}

/// Bounds of a fetch (from the config).
#[derive(Debug, Clone)]
pub struct FetchLimits {
    pub max_bytes: usize,
    pub timeout: Duration,
    pub max_redirects: usize,
    /// The proxy page fetches go through (`POST_FETCH_PROXY`); none: direct, whatever the
    /// environment's HTTP_PROXY says. A proxy resolves and connects by itself, so the address
    /// checks then only see what this server resolves: the proxy must refuse private ones.
    pub proxy: Option<reqwest::Url>,
}

/// Fetches pages for posts.
pub struct PostExpander {
    policy: AddressPolicy,
    limits: FetchLimits,
    /// One page read per core at once: reading is CPU-bound, up to seconds for the largest pages.
    readers: Arc<Semaphore>,
}

/// Sentences of the page's start used as its summary.
const SUMMARY_SENTENCES: usize = 3;

impl PostExpander {
    pub fn new(policy: AddressPolicy, limits: FetchLimits) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self { policy, limits, readers: Arc::new(Semaphore::new(cores)) }
    }

    /// Fetches `url` (following redirects, each checked again) and extracts the page's text.
    pub async fn expand(&self, url: &str) -> Result<ExpandedPage, ExpansionError> {
        let timeout = self.limits.timeout;
        tokio::time::timeout(timeout, self.fetch(url)).await.map_err(|_| ExpansionError::TooSlow(timeout))?
    }

    async fn fetch(&self, url: &str) -> Result<ExpandedPage, ExpansionError> {
        let mut url = Url::parse(url).map_err(|e| ExpansionError::BadUrl(e.to_string()))?;
        for _ in 0..=self.limits.max_redirects {
            let addr = self.vetted_address(&url).await?;
            let host = url.host_str().unwrap_or_default().to_owned();
            // The connection goes to the address that was checked, never to a second lookup
            // (a DNS answer that changes between check and use cannot reach a private address).
            let client = self.client(&host, addr)?;
            let response = client
                .get(url.clone())
                .send()
                .await
                .map_err(|e| ExpansionError::Unreachable(e.without_url().to_string()))?;
            if response.status().is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .ok_or_else(|| ExpansionError::Unreachable("redirect without a location".into()))?;
                url = url.join(location).map_err(|e| ExpansionError::BadUrl(e.to_string()))?;
                continue;
            }
            if !response.status().is_success() {
                return Err(ExpansionError::Unreachable(format!("the site answered {}", response.status())));
            }
            return self.read(url, response).await;
        }
        Err(ExpansionError::TooManyRedirects)
    }

    /// A client that connects to `host` at `addr` only, directly unless a proxy is configured.
    fn client(&self, host: &str, addr: SocketAddr) -> Result<reqwest::Client, ExpansionError> {
        let builder = reqwest::Client::builder()
            .redirect(Policy::none())
            .resolve(host, addr)
            .user_agent("postchat/0.1 (post expansion)");
        let builder = match &self.limits.proxy {
            None => builder.no_proxy(),
            Some(proxy) => builder.proxy(
                reqwest::Proxy::all(proxy.clone()).map_err(|e| ExpansionError::Unreachable(e.to_string()))?,
            ),
        };
        builder.build().map_err(|e| ExpansionError::Unreachable(e.to_string()))
    }

    /// The address to connect to for `url`, if every address its host resolves to is allowed.
    async fn vetted_address(&self, url: &Url) -> Result<SocketAddr, ExpansionError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ExpansionError::BadUrl("only http and https URLs can be fetched".into()));
        }
        let host = url.host_str().ok_or_else(|| ExpansionError::BadUrl("the URL has no host".into()))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let host_for_lookup = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host_for_lookup, port))
            .await
            .map_err(|e| ExpansionError::Unreachable(format!("cannot resolve {host}: {e}")))?
            .collect();
        if addrs.is_empty() {
            return Err(ExpansionError::Unreachable(format!("{host} has no address")));
        }
        if let Some(bad) = addrs.iter().find(|a| !self.policy.allows(a.ip())) {
            return Err(ExpansionError::Forbidden(bad.ip().to_string()));
        }
        Ok(addrs[0])
    }

    async fn read(&self, url: Url, mut response: reqwest::Response) -> Result<ExpandedPage, ExpansionError> {
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let is_html = content_type.contains("html");
        if !(is_html || content_type.starts_with("text/plain")) {
            return Err(ExpansionError::NotText(content_type));
        }
        let max = self.limits.max_bytes;
        if response.content_length().is_some_and(|len| len as usize > max) {
            return Err(ExpansionError::TooLarge(max));
        }
        let mut body = Vec::new();
        while let Some(chunk) =
            response.chunk().await.map_err(|e| ExpansionError::Unreachable(e.without_url().to_string()))?
        {
            if body.len() + chunk.len() > max {
                return Err(ExpansionError::TooLarge(max));
            }
            body.extend_from_slice(&chunk);
        }
        let (title, text) = if is_html {
            let page = self.readable(body, url.clone()).await?;
            (page.title, page.text)
        } else {
            (String::new(), String::from_utf8_lossy(&body).into_owned())
        };
        let content = normalize_whitespace(&text);
        if content.is_empty() {
            return Err(ExpansionError::Empty);
        }
        info!(url = %Untrusted(url.as_str()), chars = content.len(), "post expanded");
        Ok(ExpandedPage {
            final_url: url.to_string(),
            title: normalize_whitespace(&title),
            expanded: PostExpanded { summary: lead(&content, SUMMARY_SENTENCES), content },
        })
    }
}

impl PostExpander {
    /// The page's readable text, read on a blocking thread (never on a socket's worker), at most
    /// one page per core at once. The permit goes with the thread: a fetch that times out
    /// meanwhile does not let another read start before this one ends.
    async fn readable(&self, body: Vec<u8>, url: Url) -> Result<readable::Readable, ExpansionError> {
        let permit = self.readers.clone().acquire_owned().await.map_err(|_| ExpansionError::Empty)?;
        let read = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            readable::extract(&body, &url)
        });
        read.await.map_err(|_| ExpansionError::Empty)
    }
}

fn normalize_whitespace(text: &str) -> String {
    text.lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first `n` sentences of `text`.
fn lead(text: &str, n: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    for (i, c) in text.char_indices() {
        if matches!(c, '.' | '!' | '?') && text[i + 1..].chars().next().is_none_or(char::is_whitespace) {
            count += 1;
            if count == n {
                out = text[..=i].to_owned();
                break;
            }
        }
    }
    if out.is_empty() {
        out = text.chars().take(400).collect();
    }
    out.replace('\n', " ")
}
