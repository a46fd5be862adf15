-- The role every tenant request runs under (SET LOCAL ROLE coalition_tenant). Roles are
-- cluster-wide and several databases (test runs, staging) may be migrated on one server,
-- at the same time: create it only when missing and tolerate a concurrent creator.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'coalition_tenant') THEN
        BEGIN
            CREATE ROLE coalition_tenant NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT
                NOCREATEDB NOCREATEROLE NOREPLICATION;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- another migration created it meanwhile
        END;
    END IF;
    -- A role of that name with more power would make the wall worthless: take it away.
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'coalition_tenant'
                AND (rolsuper OR rolbypassrls OR rolcanlogin OR rolinherit OR rolcreatedb
                     OR rolcreaterole OR rolreplication)) THEN
        ALTER ROLE coalition_tenant NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT
            NOCREATEDB NOCREATEROLE NOREPLICATION;
    END IF;
    -- The application's login role (the one migrating) must be allowed to SET ROLE to it.
    IF NOT EXISTS (SELECT 1 FROM pg_auth_members am
                     JOIN pg_roles r ON r.oid = am.roleid
                     JOIN pg_roles m ON m.oid = am.member
                    WHERE r.rolname = 'coalition_tenant' AND m.rolname = current_user) THEN
        BEGIN
            EXECUTE format('GRANT coalition_tenant TO %I', current_user);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END $$;

-- Members are coalition-wide identities: a new member is linked to no partner yet, so a
-- tenant cannot see (or insert) the row it is creating. This is the one narrow door
-- through the wall: find the member with this email, or create it with its wallet, and
-- return its id. The id alone discloses nothing; every row about the member stays
-- behind row-level security until the partner links the member (which enrolment does
-- in the same transaction). Card number collisions raise unique_violation so the
-- caller can draw another number.
CREATE FUNCTION member_find_or_create(p_email text, p_name text, p_card text,
                                      OUT member_id uuid, OUT created boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO members (email, name, card_number) VALUES (p_email, p_name, p_card)
    ON CONFLICT ((lower(email))) DO NOTHING
    RETURNING id INTO member_id;
    created := member_id IS NOT NULL;
    IF created THEN
        INSERT INTO accounts (code, kind, member_id, balance, lower_bound)
        VALUES ('member:' || member_id, 'member_wallet', member_id, 0, 0);
    ELSE
        SELECT m.id INTO STRICT member_id FROM members m WHERE lower(m.email) = lower(p_email);
    END IF;
END $$;

REVOKE ALL ON FUNCTION member_find_or_create(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION member_find_or_create(text, text, text) TO coalition_tenant;
