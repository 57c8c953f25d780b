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
    /// `[a-z0-9_]+`.
    pub name: &'static str,
    /// The value's type.
    pub kind: ParamKind,
    /// See [`required`](ParamSpec::required).
    pub required: bool,
    /// Written as a user would write it after `KEY=`; lorch checks it parses as `kind`.
    pub default: Option<&'static str>,
    /// See [`help`](ParamSpec::help).
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
///
/// The declaration is checked when the crate compiles, by the rules lorch applies when it
/// loads a plugin: a package name of `[a-z0-9_-]+`, job and parameter names of `[a-z0-9_]+`,
/// no parameter twice, no required parameter with a default, and defaults that parse as their
/// type. A mistake is a compile error (E0080) at the `job!`, saying which rule:
///
/// ```compile_fail,E0080
/// # use lorch_plugin_api::{Args, Context, JobResult, ParamSpec};
/// lorch_plugin_api::job! {
///     /// "abc" is not an integer: "a parameter's default does not parse as its type".
///     package = "demo",
///     name = "count",
///     params = [ParamSpec::int("limit").default("abc")],
///     run = count,
/// }
/// # fn count(_: &Context, _: &Args) -> JobResult { Ok(()) }
/// # fn main() {}
/// ```
///
/// ```compile_fail,E0080
/// # use lorch_plugin_api::{Args, Context, JobResult, ParamSpec};
/// lorch_plugin_api::job! {
///     /// Upper case: "the job name must match [a-z0-9_]+".
///     package = "demo",
///     name = "Count",
///     run = count,
/// }
/// # fn count(_: &Context, _: &Args) -> JobResult { Ok(()) }
/// # fn main() {}
/// ```
///
/// ```compile_fail,E0080
/// # use lorch_plugin_api::{Args, Context, JobResult, ParamSpec};
/// lorch_plugin_api::job! {
///     /// "a parameter is declared twice".
///     package = "demo",
///     name = "count",
///     params = [ParamSpec::int("limit"), ParamSpec::string("limit")],
///     run = count,
/// }
/// # fn count(_: &Context, _: &Args) -> JobResult { Ok(()) }
/// # fn main() {}
/// ```
///
/// ```compile_fail,E0080
/// # use lorch_plugin_api::{Args, Context, JobResult, ParamSpec};
/// lorch_plugin_api::job! {
///     /// "a required parameter cannot have a default".
///     package = "demo",
///     name = "count",
///     params = [ParamSpec::int("limit").required().default("10")],
///     run = count,
/// }
/// # fn count(_: &Context, _: &Args) -> JobResult { Ok(()) }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! job {
    (
        $(#[doc = $doc:literal])*
        package = $package:literal,
        name = $name:literal,
        $(params = [$($param:expr),* $(,)?],)?
        run = $run:path $(,)?
    ) => {
        // The declaration's rules, checked by the compiler: a bad name or default does not build.
        const _: () = match $crate::__check_declaration($package, $name, &[$($($param),*)?]) {
            ::core::result::Result::Ok(()) => (),
            ::core::result::Result::Err(problem) => panic!("{}", problem),
        };
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

/// Checks a job declaration as lorch will when it loads the plugin (names, duplicate
/// parameters, required with a default, defaults that do not parse as their type), at compile
/// time: [`job!`](crate::job!) calls it in a constant. A float default is checked for its form
/// only (`1e999` passes here and is refused by lorch as not finite).
#[doc(hidden)]
pub const fn __check_declaration(
    package: &str,
    name: &str,
    params: &[ParamSpec],
) -> Result<(), &'static str> {
    if !valid_name(package.as_bytes(), true) {
        return Err("job!: the package name must match [a-z0-9_-]+");
    }
    if !valid_name(name.as_bytes(), false) {
        return Err("job!: the job name must match [a-z0-9_]+");
    }
    let mut i = 0;
    while i < params.len() {
        let param = &params[i];
        if !valid_name(param.name.as_bytes(), false) {
            return Err("job!: a parameter name must match [a-z0-9_]+");
        }
        let mut j = 0;
        while j < i {
            if same(params[j].name.as_bytes(), param.name.as_bytes()) {
                return Err("job!: a parameter is declared twice");
            }
            j += 1;
        }
        if let Some(default) = param.default {
            if param.required {
                return Err("job!: a required parameter cannot have a default");
            }
            let ok = match param.kind {
                ParamKind::String => true,
                ParamKind::Int => is_int(trim(default.as_bytes())),
                ParamKind::Float => is_float(trim(default.as_bytes())),
                ParamKind::Bool => is_bool(trim(default.as_bytes())),
            };
            if !ok {
                return Err("job!: a parameter's default does not parse as its type");
            }
        }
        i += 1;
    }
    Ok(())
}

/// Package names: `[a-z0-9_-]+`; job and parameter names: `[a-z0-9_]+`.
const fn valid_name(name: &[u8], hyphens: bool) -> bool {
    let mut i = 0;
    while i < name.len() {
        let b = name[i];
        if !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || (hyphens && b == b'-')) {
            return false;
        }
        i += 1;
    }
    !name.is_empty()
}

const fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn trim(mut text: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = text
        && first.is_ascii_whitespace()
    {
        text = rest;
    }
    while let [rest @ .., last] = text
        && last.is_ascii_whitespace()
    {
        text = rest;
    }
    text
}

/// What `i64::from_str` accepts: a sign, digits, in range.
const fn is_int(text: &[u8]) -> bool {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() {
        return false;
    }
    let mut value: i128 = 0;
    let mut i = 0;
    while i < digits.len() {
        if !digits[i].is_ascii_digit() {
            return false;
        }
        value = value * 10 + (digits[i] - b'0') as i128;
        if value > i64::MAX as i128 + 1 {
            return false;
        }
        i += 1;
    }
    negative || value <= i64::MAX as i128
}

/// The form `f64::from_str` accepts for a finite number: a sign, digits with at most one `.`
/// (at least one digit), an exponent.
const fn is_float(text: &[u8]) -> bool {
    let mut i = match text {
        [b'-' | b'+', ..] => 1,
        _ => 0,
    };
    let (mut digits, mut dot) = (0, false);
    while i < text.len() {
        match text[i] {
            b'0'..=b'9' => digits += 1,
            b'.' if !dot => dot = true,
            _ => break,
        }
        i += 1;
    }
    if digits == 0 {
        return false;
    }
    if i < text.len() && (text[i] == b'e' || text[i] == b'E') {
        i += 1;
        if i < text.len() && (text[i] == b'-' || text[i] == b'+') {
            i += 1;
        }
        let start = i;
        while i < text.len() && text[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    i == text.len()
}

/// `true`/`false`, `yes`/`no`, `1`/`0`, in any case.
const fn is_bool(text: &[u8]) -> bool {
    let words: [&[u8]; 6] = [b"true", b"false", b"yes", b"no", b"1", b"0"];
    let mut w = 0;
    while w < words.len() {
        let word = words[w];
        if word.len() == text.len() {
            let mut i = 0;
            while i < word.len() && text[i].to_ascii_lowercase() == word[i] {
                i += 1;
            }
            if i == word.len() {
                return true;
            }
        }
        w += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn spec(kind: ParamKind, default: &'static str) -> ParamSpec {
        ParamSpec::new("p", kind).default(default)
    }

    #[test]
    fn defaults_are_checked_as_lorch_parses_them() {
        let check = |param| __check_declaration("pkg", "job", &[param]);
        for good in [
            "42",
            " -7 ",
            "+3",
            "9223372036854775807",
            "-9223372036854775808",
        ] {
            assert_eq!(check(spec(ParamKind::Int, good)), Ok(()), "{good}");
            assert!(good.trim().parse::<i64>().is_ok(), "{good}");
        }
        for bad in [
            "abc",
            "",
            "-",
            "1.5",
            "9223372036854775808",
            "-9223372036854775809",
            "1 2",
        ] {
            assert!(check(spec(ParamKind::Int, bad)).is_err(), "{bad}");
            assert!(bad.trim().parse::<i64>().is_err(), "{bad}");
        }
        for good in ["0.5", "-1", ".5", "5.", "1e3", "2.5E-3", "+1"] {
            assert_eq!(check(spec(ParamKind::Float, good)), Ok(()), "{good}");
            assert!(good.parse::<f64>().is_ok_and(f64::is_finite), "{good}");
        }
        for bad in ["x", ".", "1e", "1.2.3", "nan", "inf", "1,5", ""] {
            assert!(check(spec(ParamKind::Float, bad)).is_err(), "{bad}");
        }
        for good in ["true", "No", "YES", "0", " false "] {
            assert_eq!(check(spec(ParamKind::Bool, good)), Ok(()), "{good}");
        }
        for bad in ["maybe", "2", "", "tru"] {
            assert!(check(spec(ParamKind::Bool, bad)).is_err(), "{bad}");
        }
        assert_eq!(check(spec(ParamKind::String, "")), Ok(()));
    }

    #[test]
    fn names_duplicates_and_required_defaults_are_refused() {
        let int = ParamSpec::int;
        let cases: [(&str, &str, &[ParamSpec], &str); 6] = [
            ("Pkg", "job", &[], "package name"),
            ("pkg", "my-job", &[], "job name"),
            ("pkg", "", &[], "job name"),
            ("pkg", "job", &[int("Limit")], "parameter name"),
            (
                "pkg",
                "job",
                &[int("n"), ParamSpec::bool("n")],
                "declared twice",
            ),
            (
                "pkg",
                "job",
                &[int("n").required().default("1")],
                "required",
            ),
        ];
        for (package, name, params, expected) in cases {
            let err = __check_declaration(package, name, params).unwrap_err();
            assert!(err.contains(expected), "{err} should name {expected}");
        }
        assert_eq!(
            __check_declaration("my-pkg_2", "job_1", &[int("n").default("3")]),
            Ok(())
        );
    }
}
