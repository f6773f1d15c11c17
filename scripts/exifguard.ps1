# Set up exifguard (first run only) and run it: the Windows PowerShell twin of scripts/exifguard.
#   .\scripts\exifguard.ps1                  start the proxy (same as: .\scripts\exifguard.ps1 run)
#   .\scripts\exifguard.ps1 inspect PHOTO    any other exifguard subcommand
# If PowerShell refuses to run scripts, allow this one for the session:
#   powershell -ExecutionPolicy Bypass -File .\scripts\exifguard.ps1 run
$ErrorActionPreference = 'Stop'
$root = Split-Path -Parent $PSScriptRoot
$venv = Join-Path $root '.venv'
$py = Join-Path $venv 'Scripts\python.exe'
$exe = Join-Path $venv 'Scripts\exifguard.exe'
$stamp = Join-Path $venv '.installed'
$project = Join-Path $root 'pyproject.toml'

function Find-Python {
    # $env:PYTHON first, then the py launcher, then python on PATH; it must be 3.11 or newer
    $candidates = @()
    if ($env:PYTHON) { $candidates += ,@($env:PYTHON) }
    if (Get-Command py -ErrorAction SilentlyContinue) { $candidates += ,@('py', '-3') }
    if (Get-Command python -ErrorAction SilentlyContinue) { $candidates += ,@('python') }
    foreach ($c in $candidates) {
        $cmd = $c[0]; $rest = @($c | Select-Object -Skip 1)
        & $cmd @rest -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>$null
        if ($LASTEXITCODE -eq 0) { return ,$c }
    }
    Write-Error 'exifguard needs Python 3.11 or newer: install it from https://www.python.org/downloads/ or set $env:PYTHON to its python.exe'
    exit 1
}

$stale = (-not (Test-Path $exe)) -or (-not (Test-Path $stamp)) -or
         ((Get-Item $project).LastWriteTime -gt (Get-Item $stamp -ErrorAction SilentlyContinue).LastWriteTime)
if ($stale) {
    [Console]::Error.WriteLine("exifguard: setting up $venv (first run) ...")
    if (-not (Test-Path $py)) {
        $c = Find-Python
        $cmd = $c[0]; $rest = @($c | Select-Object -Skip 1)
        & $cmd @rest -m venv $venv
        if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
    }
    & $py -m pip install -q --disable-pip-version-check -e $root
    if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
    New-Item -ItemType File -Force -Path $stamp | Out-Null
}
if ($args.Count -eq 0) { $argv = @('run') } else { $argv = $args }
& $exe @argv
exit $LASTEXITCODE
