//! The component as this host runs it: without its post-return functions.
//!
//! A `post-return` function frees what an export returned, once the host has copied it out, so an
//! instance can serve the next call. This host never gives an instance a next call (a fresh
//! instance per call, dropped with all its memory), so the cleanup is dead work; worse, wasmtime
//! resolves every export's post-return function each time it instantiates the component (one
//! function reference per export, some 60 of them). The component this host compiles is the
//! relay component with those canonical options left out, nothing else changed; the component
//! it hands to other hosts (`agent-relay component`) keeps them, for hosts that reuse instances.

use std::convert::Infallible;

use wasm_encoder::reencode::{Error, Reencode, ReencodeComponent, component_utils};

struct WithoutPostReturn;

impl Reencode for WithoutPostReturn {
    type Error = Infallible;
}

impl ReencodeComponent for WithoutPostReturn {
    /// Core modules are copied as they are (their code is not parsed and re-encoded).
    fn parse_component_submodule(
        &mut self,
        component: &mut wasm_encoder::Component,
        _parser: wasmparser::Parser,
        module: &[u8],
    ) -> Result<(), Error<Self::Error>> {
        component.section(&wasm_encoder::RawSection {
            id: wasm_encoder::ComponentSectionId::CoreModule.into(),
            data: module,
        });
        Ok(())
    }

    fn parse_component_canonical(
        &mut self,
        section: &mut wasm_encoder::CanonicalFunctionSection,
        func: wasmparser::CanonicalFunction,
    ) -> Result<(), Error<Self::Error>> {
        let wasmparser::CanonicalFunction::Lift {
            core_func_index,
            type_index,
            options,
        } = func
        else {
            return component_utils::parse_component_canonical(self, section, func);
        };
        let func = self.function_index(core_func_index)?;
        let ty = self.component_type_index(type_index);
        let options = options
            .iter()
            .filter(|option| !matches!(option, wasmparser::CanonicalOption::PostReturn(_)))
            .map(|option| self.canonical_option(*option))
            .collect::<Result<Vec<_>, _>>()?;
        section.lift(func, ty, options);
        Ok(())
    }
}

/// `component` with every lifted export's post-return option removed.
///
/// # Errors
/// The bytes are not a component wasmparser can read.
pub(super) fn without_post_return(component: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = wasm_encoder::Component::new();
    WithoutPostReturn
        .parse_component(&mut out, wasmparser::Parser::new(0), component)
        .map_err(|e| anyhow::anyhow!("rewriting the relay component: {e:?}"))?;
    Ok(out.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// For each lifted export of `component`: whether it names a post-return function.
    fn lifts(component: &[u8]) -> anyhow::Result<Vec<bool>> {
        let mut lifts = Vec::new();
        for payload in wasmparser::Parser::new(0).parse_all(component) {
            if let wasmparser::Payload::ComponentCanonicalSection(section) = payload? {
                for func in section {
                    if let wasmparser::CanonicalFunction::Lift { options, .. } = func? {
                        lifts.push(options.iter().any(|option| {
                            matches!(option, wasmparser::CanonicalOption::PostReturn(_))
                        }));
                    }
                }
            }
        }
        Ok(lifts)
    }

    #[test]
    fn only_the_post_return_options_go() -> anyhow::Result<()> {
        let original = crate::runtime::COMPONENT;
        let before = lifts(original)?;
        // Nearly every export returns strings or lists, so nearly every one has cleanup to skip.
        let with_cleanup = before.iter().filter(|has| **has).count();
        assert!(
            with_cleanup * 2 > before.len(),
            "{with_cleanup} of {}",
            before.len()
        );
        let lean = without_post_return(original)?;
        let after = lifts(&lean)?;
        assert_eq!(after.len(), before.len(), "every export is still lifted");
        assert!(after.iter().all(|has| !has), "no post-return is left");
        wasmparser::Validator::new().validate_all(&lean)?;
        // The core modules are copied, not re-encoded: only lift options (a few bytes each) go.
        assert!(lean.len() < original.len());
        assert!(
            original.len() - lean.len() < 8 * before.len(),
            "{} -> {} bytes",
            original.len(),
            lean.len()
        );
        Ok(())
    }
}
