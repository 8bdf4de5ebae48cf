-- Deliveries are claimed endpoint by endpoint, each endpoint's oldest due first and no
-- more than a few in flight per endpoint, so a slow receiver's backlog does not hold up
-- the others. This index finds an endpoint's pending deliveries in due order.
CREATE INDEX webhook_deliveries_pending_endpoint_idx
    ON webhook_deliveries (endpoint_id, next_attempt_at) WHERE state = 'pending';
