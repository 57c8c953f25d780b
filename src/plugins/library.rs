//! Loading one plugin file over the C ABI.

use std::fmt;
use std::fs::File;
#[cfg(target_os = "linux")]
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use lorch_plugin_api::abi::{self, PluginHeader, PluginMetadata};

/// A plugin library that passed every check. Its code stays mapped for the life of the
/// process: lorch never unloads a library, so no job code or static can dangle.
pub struct Library {
    pub header: &'static PluginHeader,
    pub metadata: PluginMetadata,
}

/// Why a file is not a usable plugin.
#[derive(Debug)]
pub enum LoadError {
    NotALibrary(String),
    NoEntrySymbol,
    AbiMismatch { found: u32 },
    BadHeader(&'static str),
    BadMetadata(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::NotALibrary(why) => write!(f, "not a loadable shared library: {why}"),
            LoadError::NoEntrySymbol => write!(
                f,
                "no `{}` symbol, so not a lorch plugin (a Rust plugin needs `lorch_plugin_api::export_plugin!();`)",
                abi::ENTRY_SYMBOL
            ),
            LoadError::AbiMismatch { found } => write!(
                f,
                "plugin ABI version {found}, but this lorch supports ABI version {}; rebuild the plugin against a matching lorch-plugin-api",
                abi::ABI_VERSION
            ),
            LoadError::BadHeader(why) => write!(f, "invalid plugin header: {why}"),
            LoadError::BadMetadata(why) => write!(f, "invalid metadata: {why}"),
        }
    }
}

/// Loads the plugin `file` (found at `path`) and reads its header and metadata: the ABI version
/// first, nothing else before it matches.
///
/// On Linux the library is opened through the descriptor (`/proc/self/fd/N`), so what loads is
/// the very file that was checked ([`safety`](super::safety)), whatever happens to the path.
/// The descriptor then stays open for as long as the library stays loaded, which is the life of
/// the process: `/proc/self/fd/N` is the library's name, and the dynamic loader returns an
/// already loaded library by name, so a number closed and used again for another plugin would
/// give back the first one.
pub fn load(file: File, path: &Path) -> Result<Library, LoadError> {
    use libloading::os::unix::{Library as Dl, RTLD_LOCAL, RTLD_NOW};
    #[cfg(target_os = "linux")]
    let opened = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    #[cfg(not(target_os = "linux"))]
    let opened = {
        let _ = file;
        path.to_owned()
    };
    // RTLD_NOW: an unresolved symbol fails here, with a message, instead of crashing a job
    // later. RTLD_LOCAL: plugins cannot see or clash with each other's symbols.
    // SAFETY: opening a library runs its initializers. Plugin directories hold code the user
    // chose to run; lorch only reads data through the entry symbol below.
    let library = unsafe { Dl::open(Some(&opened), RTLD_NOW | RTLD_LOCAL) }.map_err(|e| {
        // dlopen names the file it was given; name the plugin instead.
        let why = e
            .to_string()
            .replace(&opened.display().to_string(), &path.display().to_string());
        LoadError::NotALibrary(why)
    })?;
    #[cfg(target_os = "linux")]
    let _name_stays_taken = std::os::fd::IntoRawFd::into_raw_fd(file);
    let library: &'static Dl = Box::leak(Box::new(library));

    let symbol = format!("{}\0", abi::ENTRY_SYMBOL);
    // SAFETY: the ABI defines the entry symbol as `const LorchPluginHeader *(*)(void)`.
    let entry = unsafe { library.get::<extern "C" fn() -> *const PluginHeader>(symbol.as_bytes()) }
        .map_err(|_| LoadError::NoEntrySymbol)?;
    let header = entry();
    if header.is_null() {
        return Err(LoadError::BadHeader("the entry function returned NULL"));
    }
    // SAFETY: every ABI version starts with a u32 `abi_version`; read only that until it matches.
    let found = unsafe { header.cast::<u32>().read() };
    if found != abi::ABI_VERSION {
        return Err(LoadError::AbiMismatch { found });
    }
    // SAFETY: version 1 of the ABI promises a static `PluginHeader` behind the pointer.
    let header: &'static PluginHeader = unsafe { &*header };
    if (header.header_size as usize) < size_of::<PluginHeader>() {
        return Err(LoadError::BadHeader(
            "header_size is smaller than the version 1 header",
        ));
    }
    let (Some(metadata), Some(_)) = (header.metadata, header.run) else {
        return Err(LoadError::BadHeader("the metadata or run function is NULL"));
    };
    // SAFETY: the ABI says the metadata string stays valid while the library is loaded, and it
    // is never unloaded.
    let json = unsafe { metadata().as_bytes() };
    let metadata: PluginMetadata = serde_json::from_slice(json)
        .map_err(|e| LoadError::BadMetadata(format!("not valid metadata JSON ({e})")))?;
    super::metadata::check(&metadata).map_err(LoadError::BadMetadata)?;
    Ok(Library { header, metadata })
}
