//! Asks an OpenAI-compatible server how large a window it serves the model with, in the way each
//! server we know tells it: llama.cpp's server (`/props`: `n_ctx`), vLLM (`/v1/models`:
//! `max_model_len`), Ollama (`/api/show`: `num_ctx`, else Ollama's default, within the model's
//! `context_length`) and LM Studio (`/api/v0/models/{model}`: the loaded context length). A
//! hosted API (OpenAI) answers none of them; llama-cpp-python tells its window only in a
//! refusal ([`Refusal::window`](super::Refusal)).
//!
//! Every probe is one GET (Ollama's a POST) with a short deadline, all sent at once; the
//! answers are read by the parsers below, which take only a positive number where the server
//! puts it.

use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::{json, Value};

use super::Provider;

/// Longest a probe may take: the server is local when it answers these at all.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Most bytes of a probe's answer read (a model list can be long; a window is a number in it).
const PROBE_BYTES: usize = 1 << 20;
/// The window Ollama serves a model with when its `num_ctx` is not set (Ollama 0.6 and later;
/// `OLLAMA_CONTEXT_LENGTH` may raise it server-wide, which no endpoint reports: this is the
/// safe side).
const OLLAMA_DEFAULT_NUM_CTX: u32 = 4_096;

/// A window the provider reported, and which of its endpoints said so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedWindow {
    pub tokens: u32,
    pub source: &'static str,
}

impl Provider {
    /// The window the provider serves the model with, if any endpoint it answers tells it.
    pub async fn served_window(&self) -> Option<ServedWindow> {
        let model = self.endpoint.model.as_str();
        let lm_studio_path = format!("/api/v0/models/{model}");
        let (props, lm_studio, ollama, models) = tokio::join!(
            self.probe("/props", None, true),
            self.probe(&lm_studio_path, None, true),
            self.probe("/api/show", Some(json!({ "model": model })), true),
            self.probe("/models", None, false),
        );
        let found = [
            (props.as_ref().and_then(from_llama_cpp_props), "llama.cpp /props n_ctx"),
            (lm_studio.as_ref().and_then(from_lm_studio), "LM Studio /api/v0/models"),
            (ollama.as_ref().and_then(from_ollama_show), "Ollama /api/show"),
            (models.as_ref().and_then(|m| from_model_list(m, model)), "/v1/models max_model_len"),
        ];
        found.into_iter().find_map(|(tokens, source)| Some(ServedWindow { tokens: tokens?, source }))
    }

    /// The JSON a probe answered, when it answered 200 with JSON in time. `at_root`: the path
    /// is the server's own (beside `/v1`), not the API's.
    async fn probe(&self, path: &str, body: Option<Value>, at_root: bool) -> Option<Value> {
        let base = self.endpoint.base_url.trim_end_matches('/');
        let root = if at_root { base.strip_suffix("/v1").unwrap_or(base) } else { base };
        let url = format!("{root}{path}");
        let request = match &body {
            Some(body) => self.http.post(&url).json(body),
            None => self.http.get(&url),
        };
        let request = request.bearer_auth(self.endpoint.api_key.expose_secret()).timeout(PROBE_TIMEOUT);
        let response = request.send().await.ok().filter(|r| r.status().is_success())?;
        let bytes = tokio::time::timeout(PROBE_TIMEOUT, super::body::whole(response, PROBE_BYTES))
            .await
            .ok()?
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// A positive window that fits a `u32`.
fn tokens(value: &Value) -> Option<u32> {
    value.as_u64().filter(|n| *n > 0).and_then(|n| u32::try_from(n).ok())
}

/// llama.cpp's server: `/props` has `default_generation_settings.n_ctx` (older builds put `n_ctx`
/// at the top).
fn from_llama_cpp_props(props: &Value) -> Option<u32> {
    tokens(&props["default_generation_settings"]["n_ctx"]).or_else(|| tokens(&props["n_ctx"]))
}

/// LM Studio: the context length the model is loaded with. Not loaded yet, it is loaded on
/// demand with a context of LM Studio's choosing (not its `max_context_length`): nothing is
/// told, and a refusal teaches it.
fn from_lm_studio(model: &Value) -> Option<u32> {
    tokens(&model["loaded_context_length"])
}

/// Ollama: `num_ctx` from the model's parameters (a text of `name value` lines), else Ollama's
/// default; never more than the model's own `<architecture>.context_length`.
fn from_ollama_show(show: &Value) -> Option<u32> {
    let info = show.get("model_info")?.as_object()?;
    let trained = info.iter().find(|(key, _)| key.ends_with(".context_length")).and_then(|(_, v)| tokens(v));
    let num_ctx = show["parameters"].as_str().and_then(|parameters| {
        parameters.lines().find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("num_ctx")).then(|| words.next()?.parse::<u32>().ok()).flatten()
        })
    });
    let served = num_ctx.unwrap_or(OLLAMA_DEFAULT_NUM_CTX);
    Some(trained.map_or(served, |trained| served.min(trained)))
}

/// vLLM: the model's entry in `/v1/models` has `max_model_len`.
fn from_model_list(list: &Value, model: &str) -> Option<u32> {
    let entries = list["data"].as_array()?;
    // A server serving one model under another name (an alias) lists only that one.
    let only = match entries.as_slice() {
        [only] => Some(only),
        _ => None,
    };
    let entry = entries.iter().find(|e| e["id"].as_str() == Some(model)).or(only)?;
    tokens(&entry["max_model_len"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_cpp_props_give_n_ctx_in_new_and_old_layouts() {
        let new = json!({ "default_generation_settings": { "n_ctx": 4096, "params": {} }, "total_slots": 1 });
        assert_eq!(from_llama_cpp_props(&new), Some(4096));
        assert_eq!(from_llama_cpp_props(&json!({ "n_ctx": 2048 })), Some(2048));
        assert_eq!(from_llama_cpp_props(&json!({ "n_ctx": 0 })), None);
        assert_eq!(from_llama_cpp_props(&json!({ "model": "x" })), None);
    }

    #[test]
    fn lm_studio_gives_the_loaded_length_first() {
        let loaded = json!({ "id": "m", "max_context_length": 32768, "loaded_context_length": 4096 });
        assert_eq!(from_lm_studio(&loaded), Some(4096));
        assert_eq!(
            from_lm_studio(&json!({ "id": "m", "max_context_length": 8192, "state": "not-loaded" })),
            None
        );
    }

    #[test]
    fn ollama_serves_num_ctx_else_its_default_within_the_models_length() {
        let set = json!({ "parameters": "stop \"<|eot|>\"\nnum_ctx 8192", "model_info": { "llama.context_length": 131072 } });
        assert_eq!(from_ollama_show(&set), Some(8192));
        let unset = json!({ "parameters": "stop x", "model_info": { "qwen2.context_length": 32768 } });
        assert_eq!(from_ollama_show(&unset), Some(OLLAMA_DEFAULT_NUM_CTX));
        let small = json!({ "model_info": { "gemma.context_length": 2048 } });
        assert_eq!(from_ollama_show(&small), Some(2048));
        assert_eq!(from_ollama_show(&json!({ "error": "model not found" })), None);
    }

    #[test]
    fn vllm_lists_max_model_len_for_the_model() {
        let list = json!({ "object": "list", "data": [
            { "id": "other", "max_model_len": 100 },
            { "id": "qwen", "max_model_len": 4096 },
        ] });
        assert_eq!(from_model_list(&list, "qwen"), Some(4096));
        // A server serving one model under another name (llama-cpp-python's alias).
        let one = json!({ "data": [{ "id": "/models/x.gguf", "max_model_len": 2048 }] });
        assert_eq!(from_model_list(&one, "x"), Some(2048));
        // OpenAI's and llama-cpp-python's lists say nothing of the window.
        let openai = json!({ "data": [{ "id": "gpt-4o-mini", "owned_by": "system" }] });
        assert_eq!(from_model_list(&openai, "gpt-4o-mini"), None);
    }
}
