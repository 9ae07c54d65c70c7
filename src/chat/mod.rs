//! The chat layer: the controller that runs each exchange, the session service that knows what
//! a session is about (with the post and preference services beside it), and the in-flight
//! answers.
//!
//! Nothing here knows socketioxide, axum or Redis: the socket layer calls in with parsed
//! requests and hears back through [`AnswerAudience`], the port to a session's room; what the
//! chat needs from other processes it asks through the ports of `other_processes`, which
//! `cluster/` implements (one process: [`OneProcess`]).

mod answer;
mod answer_events;
mod controller;
mod error;
mod generation_slots;
mod inflight;
mod other_processes;
mod post_service;
mod preference_service;
mod session_cache;
mod session_service;
mod token_budget;

pub use answer::AnswerSettings;
pub use answer_events::{AnswerAudience, AnswerEvent, SessionChange};
pub use controller::{
    AcceptedMessage, ChatController, ChatParts, ChatSettings, JoinedSession, OrphanedAnswer, Regenerate,
    SendMessage,
};
pub use error::{ChatError, ErrorCode};
pub use generation_slots::GenerationSlots;
pub use inflight::{Claim, InFlightAnswer, InFlightAnswers, InFlightSnapshot, Lost, Origin};
pub use other_processes::{
    Admission, AdmissionLimits, AnswerElsewhere, AnswerLeases, BudgetAsk, CacheVersions, LeaseClaim,
    OneProcess, OtherWatchers, RateAsk, SpentTokens,
};
pub use post_service::PostService;
pub use preference_service::PreferenceService;
pub use session_cache::{CacheStats, CacheVersion, SessionCache, SessionEntry};
pub use session_service::{AskedSession, ChatSessionService};
pub use token_budget::{day_name, SpentHere, TokenBudget};
