//! Dispatch of function requests: deploy, list, describe, logs, delete,
//! rollback. The work is in `functions`; its errors reach the wire through
//! [`ToWire`](super::ToWire).

use std::sync::Arc;

use sluice_protocol::WireError;
use sluice_protocol::ops::function::{
    DeployFunctionRequest, DeployFunctionResponse, FunctionDescription, FunctionLogsRequest,
    FunctionLogsResponse, ListFunctionsResponse, RollbackFunctionRequest,
};

use super::Broker;
use super::errors::to_wire;
use crate::functions::Functions;

impl Broker {
    pub fn functions(&self) -> &Arc<Functions> {
        &self.functions
    }

    pub async fn deploy_function(
        &self,
        req: DeployFunctionRequest,
    ) -> Result<DeployFunctionResponse, WireError> {
        self.functions
            .deploy(req.manifest, req.component)
            .await
            .map_err(to_wire)
    }

    pub fn list_functions(&self) -> ListFunctionsResponse {
        ListFunctionsResponse {
            functions: self.functions.list(),
        }
    }

    pub async fn describe_function(&self, name: &str) -> Result<FunctionDescription, WireError> {
        self.functions.describe(name).await.map_err(to_wire)
    }

    pub fn function_logs(
        &self,
        req: &FunctionLogsRequest,
    ) -> Result<FunctionLogsResponse, WireError> {
        self.functions
            .logs(&req.name, req.after_seq, req.max_lines)
            .map_err(to_wire)
    }

    pub async fn delete_function(&self, name: &str) -> Result<(), WireError> {
        self.functions.delete(name).await.map_err(to_wire)
    }

    pub async fn rollback_function(
        &self,
        req: RollbackFunctionRequest,
    ) -> Result<DeployFunctionResponse, WireError> {
        self.functions
            .rollback(&req.name, req.to_version)
            .await
            .map_err(to_wire)
    }
}
