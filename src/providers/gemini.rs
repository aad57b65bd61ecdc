//! Google Gemini generateContent: translation to and from OpenAI Chat Completions.
//! (Work in progress: see issue 3. Until it lands every call answers 501.)

use bytes::Bytes;

use crate::api::{ChatRequest, Usage};
use crate::config::{BaseUrl, ProviderConfig};
use crate::error::GatewayError;
use crate::providers::{CallInfo, Provider, StreamStatus, StreamTranslator, Translated, UpstreamRequest};

pub struct Gemini {
    cfg: ProviderConfig,
}

impl Gemini {
    pub fn new(cfg: ProviderConfig) -> Self {
        Gemini { cfg }
    }
}

fn not_yet() -> GatewayError {
    GatewayError::new(501, "invalid_request_error", Some("not_implemented"), "gemini translation is not implemented yet")
}

impl Provider for Gemini {
    fn config(&self) -> &ProviderConfig { &self.cfg }
    fn chat_request(&self, _r: &ChatRequest, _c: &CallInfo, _b: &BaseUrl) -> Result<UpstreamRequest, GatewayError> { Err(not_yet()) }
    fn chat_response(&self, _b: Bytes, _c: &CallInfo) -> Result<Translated, GatewayError> { Err(not_yet()) }
    fn stream_translator(&self, _c: &CallInfo) -> Box<dyn StreamTranslator> { Box::new(Never) }
    fn error(&self, status: u16, body: &[u8]) -> GatewayError { crate::providers::openai::openai_error(status, body) }
}

struct Never;
impl StreamTranslator for Never {
    fn feed(&mut self, _i: &[u8], _o: &mut bytes::BytesMut) -> StreamStatus { StreamStatus::Failed(not_yet()) }
    fn finish(&mut self, _o: &mut bytes::BytesMut) -> StreamStatus { StreamStatus::Failed(not_yet()) }
    fn usage(&self) -> Option<Usage> { None }
}
