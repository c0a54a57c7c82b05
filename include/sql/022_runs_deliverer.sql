-- The task that delivers a send (its customer e-mails, its Plateforme Agréée deposits): the map
-- index of the chunk task (-1: the confirmation) that first held the run's delivery lock. Set
-- once, under that lock (`postier.pipeline.mailing.end_send`), read by every other task that
-- ends the run's work: they leave the delivery to it, and only its retries deliver again. In the
-- run's row, not in an XCom: Airflow clears a task's XComs when its retry starts, and a task
-- ending in that window would have delivered too.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS deliverer integer;
