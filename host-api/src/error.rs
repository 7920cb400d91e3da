//! Errors at the engine's boundary: loading a component, and calling one.

use std::fmt;

use sluice_protocol::transform_output::OutputError;

use crate::world::FunctionKind;

/// Why a component could not be loaded. Nothing is deployed when this is
/// returned; the message is meant for the function's author.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes do not parse or validate as a WebAssembly component (a core module is refused too).
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    #[error(
        "the component implements no Sluice world: it exports [{exports}] but a function must export `filter` (world filter), `transform` (world transform) or `handle` (world handler)"
    )]
    /// The component exports none of `filter`, `transform` or `handle`.
    NoWorld {
        /// The component's exports, comma-separated, to show the author.
        exports: String,
    },
    #[error(
        "the component exports the functions of several worlds ({worlds}); a function implements exactly one"
    )]
    /// The component exports the functions of more than one world.
    SeveralWorlds {
        /// The worlds whose exports it has.
        worlds: String,
    },
    /// The component implements another world than the deployment's kind.
    #[error("the component implements the {found} world, but the deployment asks for a {expected}")]
    WrongWorld {
        /// The kind the deployment (manifest) asks for.
        expected: FunctionKind,
        /// The kind the component implements.
        found: FunctionKind,
    },
    #[error(
        "unexpected import `{name}`: a function may import only the sluice:bus host interfaces (types, log, emit, schedule, kv, config, clock) and WASI 0.2"
    )]
    /// The component imports something outside sluice:bus and WASI 0.2; the host cannot satisfy it.
    UnexpectedImport {
        /// The import's name.
        name: String,
    },
    #[error(
        "import `{name}` needs a sluice:bus version this engine does not implement (it implements {})",
        crate::world::PACKAGE_VERSION
    )]
    /// The component was built against a sluice:bus version this engine does not implement; rebuild it against the engine's WIT.
    UnsupportedVersion {
        /// The import's name, with its version.
        name: String,
    },
    /// Linking the component's imports against the host failed (a signature mismatch).
    #[error("the component's imports do not match the host's: {0}")]
    Link(String),
    /// An export of the component's world has the wrong signature.
    #[error("export `{export}` does not have the signature of the {kind} world: {message}")]
    BadExport {
        /// The world the export belongs to.
        kind: FunctionKind,
        /// The export's name.
        export: &'static str,
        /// What does not match.
        message: String,
    },
    /// The component could not be instantiated (its start function trapped, or the instance pool is exhausted).
    #[error("the component failed to start: {0}")]
    Instantiate(String),
    /// The deployment's limits are invalid (a zero or over-large value).
    #[error("the deployment's limits are invalid: {0}")]
    Limits(String),
    /// The first call, which runs the guest's `init` with the deployment's config, failed; the author's message is included.
    #[error("the function failed its first call (its init or configuration): {0}")]
    Init(String),
}

/// What went wrong in a call; counted per function in its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// The call ran past its deadline (an endless loop, say).
    Timeout,
    /// The guest tried to grow its memory past the function's cap.
    Memory,
    /// The guest trapped: a panic, `unreachable`, an out-of-bounds access.
    Trap,
    /// The guest's answer or buffered effects exceeded their size limit.
    OutputLimit,
    /// The guest's answer does not fit the batch (wrong count, malformed
    /// transform buffer).
    InvalidOutput,
    /// The input batch is not a valid record batch sequence.
    InvalidInput,
    /// No instance could be created (for example the instance pool is full).
    Instantiate,
}

impl ErrorKind {
    /// Every kind, for metrics that list a counter per kind.
    pub const ALL: [ErrorKind; 7] = [
        Self::Timeout,
        Self::Memory,
        Self::Trap,
        Self::OutputLimit,
        Self::InvalidOutput,
        Self::InvalidInput,
        Self::Instantiate,
    ];

    /// A stable lowercase name, used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Memory => "memory",
            Self::Trap => "trap",
            Self::OutputLimit => "output_limit",
            Self::InvalidOutput => "invalid_output",
            Self::InvalidInput => "invalid_input",
            Self::Instantiate => "instantiate",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed call. The batch's messages were not processed and its effects
/// were dropped; the broker retries or dead-letters them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{function}: {kind}: {message}")]
pub struct CallError {
    /// The function's name, as deployed.
    pub function: String,
    /// What went wrong; decides whether the broker counts an attempt (see [`Self::is_transient`]).
    pub kind: ErrorKind,
    /// What happened, including the guest's panic message when it wrote one.
    pub message: String,
}

impl CallError {
    /// Whether the failure says nothing about the messages: the engine
    /// could not get an instance (the pool is full, say). The broker should
    /// retry such a batch without counting an attempt against it.
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Instantiate
    }
}

/// Why a guest's answer was refused: the call fails as
/// [`ErrorKind::InvalidOutput`] with this as its message.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AnswerError {
    #[error("the filter answered {got} verdicts for {messages} messages")]
    Verdicts { got: usize, messages: usize },
    #[error("the handler answered {got} outcomes for {messages} messages")]
    Outcomes { got: usize, messages: usize },
    /// A transform's output buffer does not decode.
    #[error(transparent)]
    Malformed(#[from] OutputError),
    #[error("output names input {input} of a {messages}-message batch")]
    NoSuchInput { input: u32, messages: usize },
    #[error("output for input {input} comes after input {last}")]
    OutOfOrder { input: u32, last: u32 },
    #[error("the deployment may not publish to `{0}`")]
    TopicNotAllowed(String),
}
