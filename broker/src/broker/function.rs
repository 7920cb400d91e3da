//! Dispatch of function requests: deploy, list, describe, logs, delete,
//! rollback. The work is in `functions`; this layer maps errors to wire
//! codes.

use std::sync::Arc;

use sluice_protocol::ops::function::{
    DeployFunctionRequest, DeployFunctionResponse, FunctionDescription, FunctionLogsRequest,
    FunctionLogsResponse, ListFunctionsResponse, RollbackFunctionRequest,
};
use sluice_protocol::{ErrorCode, WireError};

use super::Broker;
use crate::functions::{FunctionError, Functions};

/// The wire error for a function error.
pub fn function_error(e: FunctionError) -> WireError {
    let code = match &e {
        FunctionError::Unknown(_) => ErrorCode::UnknownFunction,
        FunctionError::Invalid(_) => ErrorCode::InvalidFunction,
        FunctionError::UnknownTopic(_) => ErrorCode::UnknownTopic,
        FunctionError::Storage(_) => ErrorCode::StorageError,
    };
    WireError::new(code, e.to_string())
}

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
            .map_err(function_error)
    }

    pub fn list_functions(&self) -> ListFunctionsResponse {
        ListFunctionsResponse {
            functions: self.functions.list(),
        }
    }

    pub async fn describe_function(&self, name: &str) -> Result<FunctionDescription, WireError> {
        self.functions.describe(name).await.map_err(function_error)
    }

    pub fn function_logs(
        &self,
        req: &FunctionLogsRequest,
    ) -> Result<FunctionLogsResponse, WireError> {
        self.functions
            .logs(&req.name, req.after_seq, req.max_lines)
            .map_err(function_error)
    }

    pub async fn delete_function(&self, name: &str) -> Result<(), WireError> {
        self.functions.delete(name).await.map_err(function_error)
    }

    pub async fn rollback_function(
        &self,
        req: RollbackFunctionRequest,
    ) -> Result<DeployFunctionResponse, WireError> {
        self.functions
            .rollback(&req.name, req.to_version)
            .await
            .map_err(function_error)
    }
}
