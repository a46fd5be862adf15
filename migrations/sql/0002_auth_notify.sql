-- Every change that can end a bearer token's validity notifies the API processes, which
-- drop their token caches: revocation and suspension take effect at once everywhere.
CREATE FUNCTION auth_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('coalition_auth', TG_TABLE_NAME);
    RETURN NULL;
END $$;

CREATE TRIGGER oauth_tokens_revoked AFTER UPDATE OF revoked_at, expires_at OR DELETE
    ON oauth_tokens FOR EACH STATEMENT EXECUTE FUNCTION auth_notify_change();
CREATE TRIGGER oauth_clients_revoked AFTER UPDATE OF revoked_at OR DELETE
    ON oauth_clients FOR EACH STATEMENT EXECUTE FUNCTION auth_notify_change();
CREATE TRIGGER partners_status_changed AFTER UPDATE OF status
    ON partners FOR EACH STATEMENT EXECUTE FUNCTION auth_notify_change();
