//! Function admin: deploy, list, describe, read logs, delete, roll back.

use bytes::Bytes;
use sluice_protocol::frame;
use sluice_protocol::ops::{
    DeleteFunctionRequest, DeployFunctionRequest, DescribeFunctionRequest, FunctionLogsRequest,
    ListFunctionsRequest, Payload, RollbackFunctionRequest,
};

use crate::Client;
use crate::error::{ClientError, Result};
use crate::function::{
    DEPLOY_EXTRA_WAIT, DeployFunctionResponse, FunctionDescription, FunctionLogsResponse,
    FunctionManifest, FunctionSummary,
};

impl Client {
    /// Deploys `component` (the bytes of a WebAssembly component) under
    /// `manifest.name`: a new function at version 1, or the next version of
    /// an existing one, which replaces the active version once the broker
    /// has validated and started it.
    ///
    /// Fails with [`ErrorCode::InvalidFunction`](crate::ErrorCode::InvalidFunction)
    /// (as [`ClientError::Broker`]) when the broker refuses the component or
    /// manifest; nothing changes then. A component too large for one frame
    /// fails with [`ClientError::MessageTooLarge`] before anything is sent.
    ///
    /// The upload goes on a stream of its own, so a multi-megabyte component
    /// does not hold up other requests of this client, and it may take
    /// [`DEPLOY_EXTRA_WAIT`] beyond the request timeout.
    pub async fn deploy_function(
        &self,
        manifest: FunctionManifest,
        component: impl Into<Bytes>,
    ) -> Result<DeployFunctionResponse> {
        let req = DeployFunctionRequest {
            manifest,
            component: component.into(),
        };
        // An over-limit frame makes the broker close the stream; say why
        // here instead.
        let size = frame::HEADER_LEN + req.encode().len();
        let max = self.conn.handshake_info().await?.max_frame_bytes as usize;
        if size > max {
            return Err(ClientError::MessageTooLarge { size, max });
        }
        let stream = self.conn.open_stream().await?;
        stream.request(&req, Some(DEPLOY_EXTRA_WAIT)).await
    }

    /// Every deployed function, with its kind, attachment, active version,
    /// status and call counts.
    pub async fn list_functions(&self) -> Result<Vec<FunctionSummary>> {
        Ok(self.conn.request(&ListFunctionsRequest).await?.functions)
    }

    /// One function in detail: the active manifest, every stored version,
    /// metrics (errors by kind, latency, fuel, instances, logs) and, for
    /// transforms and handlers, their position and lag per partition.
    /// Fails with [`ErrorCode::UnknownFunction`](crate::ErrorCode::UnknownFunction)
    /// for a name not deployed.
    pub async fn describe_function(&self, name: &str) -> Result<FunctionDescription> {
        self.conn
            .request(&DescribeFunctionRequest {
                name: name.to_owned(),
            })
            .await
    }

    /// Up to `max_lines` (0: the broker's default) log lines of a function
    /// with a sequence number above `after_seq` (0: from the oldest kept),
    /// oldest first. To follow a log, call again with
    /// [`FunctionLogsResponse::next_after`].
    ///
    /// ```no_run
    /// # async fn demo(client: sluice_client::Client) -> sluice_client::Result<()> {
    /// let mut after = 0;
    /// loop {
    ///     let page = client.function_logs("redact", after, 100).await?;
    ///     for l in &page.lines {
    ///         println!("{} v{} {}", l.level, l.version, l.message);
    ///     }
    ///     after = page.next_after(after);
    ///     tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    /// }
    /// # }
    /// ```
    pub async fn function_logs(
        &self,
        name: &str,
        after_seq: u64,
        max_lines: u32,
    ) -> Result<FunctionLogsResponse> {
        self.conn
            .request(&FunctionLogsRequest {
                name: name.to_owned(),
                after_seq,
                max_lines,
            })
            .await
    }

    /// Stops a function and forgets it: every version, its positions and
    /// its logs. Output it already wrote stays.
    pub async fn delete_function(&self, name: &str) -> Result<()> {
        self.conn
            .request(&DeleteFunctionRequest {
                name: name.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Makes a stored version active again, component and manifest: `to`,
    /// or with `None` (or `Some(0)`) the version before the active one.
    /// Answers like a deploy: the version now active and the one it
    /// replaced. The broker restarts the function, so this may take as long
    /// as a deploy.
    pub async fn rollback_function(
        &self,
        name: &str,
        to: Option<u32>,
    ) -> Result<DeployFunctionResponse> {
        let stream = self.conn.open_stream().await?;
        stream
            .request(
                &RollbackFunctionRequest {
                    name: name.to_owned(),
                    to_version: to.unwrap_or(0),
                },
                Some(DEPLOY_EXTRA_WAIT),
            )
            .await
    }
}
