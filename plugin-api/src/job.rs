//! What a job declares about itself, and the macros that register and export it.

use serde::{Deserialize, Serialize};

use crate::{Args, Context, JobResult};

/// The signature of every job.
pub type JobFn = fn(&Context<'_>, &Args) -> JobResult;

/// One registered job. Built by [`job!`](crate::job!); you rarely write it by hand.
#[derive(Debug)]
pub struct JobSpec {
    /// The package, `[a-z0-9_-]`, e.g. `ingester`.
    pub package: &'static str,
    /// The job's name inside its package, `[a-z0-9_]`, e.g. `extract_gmail`.
    pub name: &'static str,
    /// The doc comment, as rustdoc stores it (one line per `///`).
    pub description: &'static str,
    /// The extra parameters accepted through `--param KEY=VALUE`.
    pub params: &'static [ParamSpec],
    /// The job itself.
    pub run: JobFn,
}

inventory::collect!(JobSpec);

/// The type of an extra parameter. lorch parses `--param KEY=VALUE` into it before the job runs,
/// so the job reads typed values from [`Params`](crate::Params).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamKind {
    /// Any text.
    String,
    /// A signed 64-bit integer.
    Int,
    /// A 64-bit float.
    Float,
    /// `true`/`false` (also `yes`/`no`, `1`/`0`).
    Bool,
}

impl ParamKind {
    /// The name users see in `jobs show` and in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamKind::String => "string",
            ParamKind::Int => "int",
            ParamKind::Float => "float",
            ParamKind::Bool => "bool",
        }
    }
}

/// An extra parameter a job accepts, declared with `const` builders so it can live in a static:
///
/// ```
/// use lorch_plugin_api::ParamSpec;
/// const LIMIT: ParamSpec = ParamSpec::int("limit").default("100").help("Stop after this many");
/// ```
///
/// A parameter is optional unless marked [`required`](ParamSpec::required); an optional one
/// without a default is simply absent from [`Params`](crate::Params) when not given.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub kind: ParamKind,
    pub required: bool,
    /// Written as a user would write it after `KEY=`; lorch checks it parses as `kind`.
    pub default: Option<&'static str>,
    pub help: &'static str,
}

impl ParamSpec {
    const fn new(name: &'static str, kind: ParamKind) -> Self {
        ParamSpec {
            name,
            kind,
            required: false,
            default: None,
            help: "",
        }
    }
    /// A text parameter.
    pub const fn string(name: &'static str) -> Self {
        Self::new(name, ParamKind::String)
    }
    /// An integer parameter.
    pub const fn int(name: &'static str) -> Self {
        Self::new(name, ParamKind::Int)
    }
    /// A float parameter.
    pub const fn float(name: &'static str) -> Self {
        Self::new(name, ParamKind::Float)
    }
    /// A boolean parameter.
    pub const fn bool(name: &'static str) -> Self {
        Self::new(name, ParamKind::Bool)
    }
    /// `run-job` refuses to start without it.
    pub const fn required(mut self) -> Self {
        self.required = true;
        self
    }
    /// The value used when the user gives none.
    pub const fn default(mut self, value: &'static str) -> Self {
        self.default = Some(value);
        self
    }
    /// One line shown by `lorch jobs show`.
    pub const fn help(mut self, help: &'static str) -> Self {
        self.help = help;
        self
    }
}

/// Registers a job. The doc comment becomes the description shown by `lorch jobs show`.
///
/// ```
/// use lorch_plugin_api::{Args, Context, JobResult, ParamSpec};
///
/// lorch_plugin_api::job! {
///     /// Says hello.
///     package = "demo",
///     name = "hello",
///     params = [ParamSpec::string("who").default("world").help("Whom to greet")],
///     run = hello,
/// }
///
/// fn hello(ctx: &Context, args: &Args) -> JobResult {
///     ctx.info(format!("hello, {}", args.params.string("who").unwrap_or("world")));
///     Ok(())
/// }
/// # fn main() {}
/// ```
///
/// `params` may be left out when the job takes only the common arguments
/// (`--account`, `--since`, `--until`).
#[macro_export]
macro_rules! job {
    (
        $(#[doc = $doc:literal])*
        package = $package:literal,
        name = $name:literal,
        $(params = [$($param:expr),* $(,)?],)?
        run = $run:path $(,)?
    ) => {
        $crate::__inventory::submit! {
            $crate::JobSpec {
                package: $package,
                name: $name,
                description: concat!($($doc, "\n"),*),
                params: &[$($($param),*)?],
                run: $run,
            }
        }
    };
}

/// Makes a `cdylib` a lorch plugin: exports the entry symbol `lorch_plugin_entry`, through
/// which lorch reads the jobs registered with [`job!`](crate::job!) and runs them.
///
/// Call it once per crate, anywhere at module level. It is harmless in a crate that is also
/// linked statically into a custom `lorch` binary.
#[macro_export]
macro_rules! export_plugin {
    () => {
        /// The lorch plugin entry point (see `lorch_plugin_api::abi`).
        #[unsafe(no_mangle)]
        pub extern "C" fn lorch_plugin_entry() -> &'static $crate::abi::PluginHeader {
            &$crate::abi::PLUGIN_HEADER
        }
    };
}
