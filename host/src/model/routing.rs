//! The configured provider, with the cascade brains beside it that an agent picks by model
//! name (`session-config.model = "cascade"` or `"cascade:<profile>"`): a new agent version
//! choosing another brain takes effect on its next call, without a restart.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::cascade::CascadeProvider;
use super::cascade::config::CascadeConfig;
use super::{ConnectError, FormatSupport, ModelProvider, ModelSession, SessionSettings};

pub(crate) struct Routed {
    default: Arc<dyn ModelProvider>,
    /// By profile name; `""` is `[model.cascade]`'s own stages.
    cascades: BTreeMap<String, Arc<CascadeProvider>>,
}

impl Routed {
    pub(crate) fn new(
        default: Arc<dyn ModelProvider>,
        cascades: BTreeMap<String, Arc<CascadeProvider>>,
    ) -> Routed {
        Routed { default, cascades }
    }

    /// The provider a session's model name leads to; `None` for a cascade profile that is
    /// not configured.
    fn route(&self, model: Option<&str>) -> Option<&dyn ModelProvider> {
        let Some(profile) = model.and_then(CascadeConfig::profile_name) else {
            return Some(self.default.as_ref());
        };
        let cascade = self.cascades.get(profile)?;
        Some(cascade.as_ref())
    }
}

impl ModelProvider for Routed {
    fn name(&self) -> &'static str {
        self.default.name()
    }

    fn formats(&self) -> FormatSupport {
        self.default.formats()
    }

    fn formats_for(&self, model: Option<&str>) -> FormatSupport {
        match self.route(model) {
            Some(provider) => provider.formats_for(model),
            None => self.default.formats(),
        }
    }

    /// Within one brain only: another model name may lead to another provider.
    fn updates_live(&self, running: &SessionSettings, next: &SessionSettings) -> bool {
        running.model == next.model
            && self
                .route(running.model.as_deref())
                .is_some_and(|p| p.updates_live(running, next))
    }

    fn connect(
        &self,
        settings: SessionSettings,
    ) -> BoxFuture<'_, Result<ModelSession, ConnectError>> {
        match self.route(settings.model.as_deref()) {
            Some(provider) => provider.connect(settings),
            None => {
                let model = settings.model.unwrap_or_default();
                Box::pin(async move { Err(ConnectError::UnknownProfile { model }) })
            }
        }
    }
}
