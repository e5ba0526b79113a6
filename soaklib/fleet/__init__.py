"""Beyond one machine: fleet soaks on Dask workers, the fleet's verdict read with DuckDB, and the
executor a lane's jobs run on (``local`` or ``dask://HOST:PORT``)."""
