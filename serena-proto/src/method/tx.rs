//! Class `tx` (90): standard transactions.

method! {
    /// Puts the channel in transaction mode.
    Select = "tx.select" {}
}

method! {
    /// Confirms transaction mode.
    SelectOk = "tx.select-ok" {}
}

method! {
    /// Commits the current transaction.
    Commit = "tx.commit" {}
}

method! {
    /// Confirms a commit.
    CommitOk = "tx.commit-ok" {}
}

method! {
    /// Abandons the current transaction.
    Rollback = "tx.rollback" {}
}

method! {
    /// Confirms a rollback.
    RollbackOk = "tx.rollback-ok" {}
}
