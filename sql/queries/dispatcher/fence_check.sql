-- fence_check: does the run still hold its row (run_fence.sql)? A write with nothing of its own to change,
-- e.g. a streaming message's `delta` feed events (dispatcher/writeback.py), which its caller appends in the
-- same transaction only when `held`: FOR SHARE keeps the row the run's until that commits.
WITH
--@include dispatcher/run_fence
SELECT EXISTS (SELECT 1 FROM fence) AS held
