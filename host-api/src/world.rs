//! The three worlds a function can implement, and the check that a
//! component implements exactly one of them with nothing unexpected.

use std::fmt;

use wasmtime::component::Component;

use crate::error::LoadError;

/// The package every Sluice interface lives in.
pub const PACKAGE: &str = "sluice:bus";
/// The WIT package version this engine implements.
pub const PACKAGE_VERSION: &str = "0.1.0";
/// The host interfaces a function may import from [`PACKAGE`].
pub const HOST_INTERFACES: [&str; 7] =
    ["types", "log", "emit", "schedule", "kv", "config", "clock"];

/// Which world a function implements; decides how the broker attaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FunctionKind {
    /// Decides which messages a subscription receives.
    Filter,
    /// Maps each message to zero or more messages.
    Transform,
    /// A serverless consumer answering ack, retry or dead-letter.
    Handler,
}

impl FunctionKind {
    /// Every kind, in wire order (filter, transform, handler).
    pub const ALL: [FunctionKind; 3] = [Self::Filter, Self::Transform, Self::Handler];

    /// The name of the world in `wit/sluice-bus.wit`.
    pub fn world(self) -> &'static str {
        match self {
            Self::Filter => "filter",
            Self::Transform => "transform",
            Self::Handler => "handler",
        }
    }

    /// The function the world exports.
    pub fn export(self) -> &'static str {
        match self {
            Self::Filter => "filter",
            Self::Transform => "transform",
            Self::Handler => "handle",
        }
    }

    /// Parses a world name (`filter`, `transform`, `handler`).
    pub fn from_world(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.world() == name)
    }
}

impl fmt::Display for FunctionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.world())
    }
}

/// Finds which world `component` implements and checks its imports.
///
/// Imports must come from the `sluice:bus` host interfaces (at this
/// engine's version) or WASI 0.2 (which Rust's standard library pulls in;
/// the engine grants it no files, sockets or environment). Exactly one of
/// the world exports must be present. `expected`, when given, must match.
pub fn check_component(
    engine: &wasmtime::Engine,
    component: &Component,
    expected: Option<FunctionKind>,
) -> Result<FunctionKind, LoadError> {
    let ty = component.component_type();
    for (name, _) in ty.imports(engine) {
        check_import(name)?;
    }
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_owned()).collect();
    let found: Vec<FunctionKind> = FunctionKind::ALL
        .into_iter()
        .filter(|k| exports.iter().any(|e| e == k.export()))
        .collect();
    let kind = match found.as_slice() {
        [kind] => *kind,
        [] => {
            return Err(LoadError::NoWorld {
                exports: exports.join(", "),
            });
        }
        many => {
            return Err(LoadError::SeveralWorlds {
                worlds: many
                    .iter()
                    .map(|k| k.world())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    };
    if let Some(expected) = expected
        && expected != kind
    {
        return Err(LoadError::WrongWorld {
            expected,
            found: kind,
        });
    }
    Ok(kind)
}

fn check_import(name: &str) -> Result<(), LoadError> {
    if name.starts_with("wasi:") {
        return Ok(());
    }
    let unexpected = || LoadError::UnexpectedImport {
        name: name.to_owned(),
    };
    let rest = name.strip_prefix("sluice:bus/").ok_or_else(unexpected)?;
    let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
    if !HOST_INTERFACES.contains(&interface) {
        return Err(unexpected());
    }
    if version != PACKAGE_VERSION {
        return Err(LoadError::UnsupportedVersion {
            name: name.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_are_checked_by_package_interface_and_version() {
        assert!(check_import("sluice:bus/log@0.1.0").is_ok());
        assert!(check_import("wasi:cli/stderr@0.2.6").is_ok());
        assert!(matches!(
            check_import("sluice:bus/files@0.1.0"),
            Err(LoadError::UnexpectedImport { .. })
        ));
        assert!(matches!(
            check_import("acme:net/http@1.0.0"),
            Err(LoadError::UnexpectedImport { .. })
        ));
        assert!(matches!(
            check_import("sluice:bus/kv@0.2.0"),
            Err(LoadError::UnsupportedVersion { .. })
        ));
    }

    #[test]
    fn world_names_round_trip() {
        for k in FunctionKind::ALL {
            assert_eq!(FunctionKind::from_world(k.world()), Some(k));
        }
        assert_eq!(FunctionKind::from_world("nope"), None);
    }
}
