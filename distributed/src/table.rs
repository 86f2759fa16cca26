//! A Lightning table as the cluster plans it: the table's own provider, its scans
//! wrapped so Ballista can split them into tasks ([`crate::ClusterScanExec`]).

use crate::exec::ClusterScanExec;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{Constraints, Result, Statistics};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use lightning_query::LightningTableProvider;
use std::sync::Arc;

/// A table of a published database, read on a cluster.
#[derive(Debug, Clone)]
pub struct ClusterTable {
    pub(crate) inner: LightningTableProvider,
}

impl ClusterTable {
    pub fn new(inner: LightningTableProvider) -> Self {
        ClusterTable { inner }
    }
}

#[async_trait]
impl TableProvider for ClusterTable {
    fn schema(&self) -> arrow::datatypes::SchemaRef {
        self.inner.schema()
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.inner.constraints()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let scan = self.inner.scan(state, projection, filters, limit).await?;
        Ok(Arc::new(ClusterScanExec::over(scan)?))
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    fn statistics(&self) -> Option<Statistics> {
        self.inner.statistics()
    }
}
