//! Networks: a private bridge network for throwaway copies, and its removal.

use std::collections::HashMap;

use bollard::models::NetworkCreateRequest;
use zdr_core::{ErrorKind, Result};

use crate::Docker;

impl Docker {
    /// Creates a bridge network `name` carrying `labels` (an existing one is a conflict).
    /// Containers on it reach each other by their aliases, and nothing outside it by name:
    /// a copy of a stack on its own network answers for the service names only there.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] when it exists; engine failures.
    pub async fn create_network(&self, name: &str, labels: &HashMap<String, String>) -> Result<()> {
        let req = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".to_owned()),
            labels: Some(labels.clone()),
            ..NetworkCreateRequest::default()
        };
        self.client()
            .create_network(req)
            .await
            .map(|_| ())
            .map_err(|e| {
                self.err(e, format!("cannot create network {name}"))
                    .with_context("network", name)
            })
    }

    /// The networks carrying `label` (any value), each with all its labels.
    ///
    /// # Errors
    /// When the engine cannot be asked.
    pub async fn labelled_networks(
        &self,
        label: &str,
    ) -> Result<Vec<(String, HashMap<String, String>)>> {
        let mut filters = HashMap::new();
        filters.insert("label", vec![label.to_owned()]);
        let opts = bollard::query_parameters::ListNetworksOptionsBuilder::new()
            .filters(&filters)
            .build();
        let list = self
            .client()
            .list_networks(Some(opts))
            .await
            .map_err(|e| self.err(e, format!("cannot list the networks labelled {label}")))?;
        Ok(list
            .into_iter()
            .filter_map(|n| Some((n.name?, n.labels.unwrap_or_default())))
            .collect())
    }

    /// Removes network `name`; one that does not exist is not an error.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] when a container still uses it; engine failures.
    pub async fn remove_network(&self, name: &str) -> Result<()> {
        match self.client().remove_network(name).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = self
                    .err(e, format!("cannot remove network {name}"))
                    .with_context("network", name);
                if e.kind() == ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }
}
