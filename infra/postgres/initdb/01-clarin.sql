-- Runs once, when the official postgres image initialises an empty data
-- directory (docker-compose and k8s/dev-deps mount this folder at
-- /docker-entrypoint-initdb.d).
--
-- One database, one schema per service (each service migrates its own schema).
-- POSTGRES_DB=clarin normally creates it already; this keeps the file correct
-- when POSTGRES_DB is left at its default.
SELECT 'CREATE DATABASE clarin'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'clarin')\gexec

-- Every neonize (whatsmeow) session keeps its own small connection pool, and
-- every service runs its own asyncpg pool: the default of 100 connections is
-- far too low for 200+ devices. The server is also started with
-- `-c max_connections=...`; this makes the setting survive a plain restart.
ALTER SYSTEM SET max_connections = 500;
