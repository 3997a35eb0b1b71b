; Inno Setup script: the Windows installer of Distill Studio (built on Windows by .github/workflows/bundle.yml:
; `iscc /DVersion=<version> /DSource=dist\DistillStudio-<version>-windows-x86_64 packaging\windows\distill-studio.iss`).
; Installs the one-folder bundle for the current user (no administrator rights), a Start-menu entry, an optional
; desktop icon, `distill` on the user's PATH, and an uninstaller. Runs and settings live in the user's data folders
; and are kept on uninstall.
#ifndef Version
  #define Version "0.0.0"
#endif
#ifndef Source
  #define Source "..\..\dist\DistillStudio-" + Version + "-windows-x86_64"
#endif

[Setup]
AppId={{5C6F2E1A-7B41-4C1E-9E0B-2D5A9F3C8B10}
AppName=Distill Studio
AppVersion={#Version}
AppPublisher=Distill Studio
DefaultDirName={localappdata}\Programs\Distill Studio
DefaultGroupName=Distill Studio
PrivilegesRequired=lowest
OutputDir=..\..\dist
OutputBaseFilename=DistillStudio-{#Version}-windows-x86_64-setup
SetupIconFile=..\build-icons\distill-studio.ico
UninstallDisplayIcon={app}\DistillStudio.exe
Compression=lzma2/max
SolidCompression=yes
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
ChangesEnvironment=yes

[Tasks]
Name: "desktopicon"; Description: "Create a desktop icon"; GroupDescription: "Additional icons:"; Flags: unchecked
Name: "addtopath"; Description: "Add the distill command to PATH"; GroupDescription: "Command line:"

[Files]
Source: "{#Source}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{group}\Distill Studio"; Filename: "{app}\DistillStudio.exe"
Name: "{group}\Uninstall Distill Studio"; Filename: "{uninstallexe}"
Name: "{autodesktop}\Distill Studio"; Filename: "{app}\DistillStudio.exe"; Tasks: desktopicon

[Registry]
Root: HKCU; Subkey: "Environment"; ValueType: expandsz; ValueName: "Path"; ValueData: "{olddata};{app}"; \
    Tasks: addtopath; Check: NeedsAddPath(ExpandConstant('{app}'))

[Run]
Filename: "{app}\DistillStudio.exe"; Description: "Start Distill Studio"; Flags: nowait postinstall skipifsilent

[Code]
function NeedsAddPath(Dir: string): Boolean;
var
  Path: string;
begin
  if not RegQueryStringValue(HKCU, 'Environment', 'Path', Path) then
  begin
    Result := True;
    exit;
  end;
  Result := Pos(';' + Uppercase(Dir) + ';', ';' + Uppercase(Path) + ';') = 0;
end;
