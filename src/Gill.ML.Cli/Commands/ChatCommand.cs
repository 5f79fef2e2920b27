using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using Gill.ML.Chat;
using Gill.ML.Inference;
using Microsoft.Extensions.AI;
using Spectre.Console;

namespace Gill.ML.Cli.Commands;

/// <summary><c>gill chat --model DIR [--out DIR]</c>: a terminal conversation with a GILL model.</summary>
internal sealed class ChatCommandProvider : ICommandProvider
{
    public Command Build()
    {
        var common = new GillInferenceCliOptions();
        var output = new Option<string>("--out", "-o") { Description = "Folder for the images of the conversation", DefaultValueFactory = _ => "gill-chat" };
        var gallery = new Option<string?>("--gallery-root") { Description = "Folder the gallery ids are relative to (to copy retrieved images)" };
        var cmd = new Command("chat", "Talk to a GILL model: text and image paths in, text and saved image paths out (/image PATH, /save [FILE], /reset, /quit)");
        common.AddTo(cmd);
        cmd.Options.Add(output);
        cmd.Options.Add(gallery);
        cmd.SetAction(parse =>
        {
            GillGenerationOptions options;
            try
            {
                options = common.Build(parse);
                options.StopAtNewline = true;
            }
            catch (ArgumentException e)
            {
                AnsiConsole.MarkupLineInterpolated($"[red]Invalid options:[/] {e.Message}");
                return 2;
            }
            try
            {
                using var model = GillInferenceCliOptions.Load(parse.GetValue(common.Model)!);
                return Loop(model, options, parse.GetValue(output)!, parse.GetValue(gallery));
            }
            catch (Exception e) when (e is IOException or InvalidDataException or ArgumentException or InvalidOperationException)
            {
                AnsiConsole.MarkupLineInterpolated($"[red]{e.Message}[/]");
                return 1;
            }
        });
        return cmd;
    }

    private static int Loop(GillModel model, GillGenerationOptions options, string outFolder, string? galleryRoot)
    {
        Directory.CreateDirectory(outFolder);
        using var client = new GillChatClient(model, options, galleryRoot);
        var history = new List<ChatMessage>();
        var pendingImages = new List<string>();
        int imageCount = 0;
        AnsiConsole.MarkupLine("[grey]/image PATH attaches an image to your next message; /save [[FILE]] writes the transcript; /reset clears it; /quit ends.[/]");
        while (true)
        {
            AnsiConsole.Markup("[bold]you>[/] ");
            var line = Console.ReadLine();
            if (line is null) return 0;
            line = line.Trim();
            if (line.Length == 0) continue;
            if (line.StartsWith('/'))
            {
                var (cmd, arg) = line.IndexOf(' ') is var sp and > 0 ? (line[..sp], line[(sp + 1)..].Trim()) : (line, "");
                switch (cmd)
                {
                    case "/quit" or "/exit":
                        return 0;
                    case "/reset":
                        history.Clear();
                        pendingImages.Clear();
                        AnsiConsole.MarkupLine("[grey]Conversation cleared.[/]");
                        break;
                    case "/image":
                        if (!File.Exists(arg)) AnsiConsole.MarkupLineInterpolated($"[red]No such file:[/] {arg}");
                        else { pendingImages.Add(arg); AnsiConsole.MarkupLineInterpolated($"[grey]Attached {arg}.[/]"); }
                        break;
                    case "/save":
                        var file = arg.Length > 0 ? arg : Path.Combine(outFolder, "transcript.json");
                        SaveTranscript(history, file);
                        AnsiConsole.MarkupLineInterpolated($"[grey]Saved {file}.[/]");
                        break;
                    default:
                        AnsiConsole.MarkupLineInterpolated($"[red]Unknown command {cmd}.[/]");
                        break;
                }
                continue;
            }
            var contents = new List<AIContent>();
            foreach (var img in pendingImages) contents.Add(new DataContent(File.ReadAllBytes(img), "image/png") { Name = img });
            pendingImages.Clear();
            contents.Add(new TextContent(line));
            history.Add(new ChatMessage(ChatRole.User, contents));
            ChatResponse response;
            try
            {
                response = AnsiConsole.Status().Start("thinking…", _ => client.GetResponseAsync(history).GetAwaiter().GetResult());
            }
            catch (Exception e) when (e is ArgumentException or InvalidDataException or InvalidOperationException or FileNotFoundException)
            {
                history.RemoveAt(history.Count - 1);
                AnsiConsole.MarkupLineInterpolated($"[red]{e.Message}[/]");
                continue;
            }
            var reply = response.Messages.Single();
            history.Add(reply);
            foreach (var c in reply.Contents)
            {
                switch (c)
                {
                    case TextContent t:
                        AnsiConsole.MarkupLineInterpolated($"[bold]gill>[/] {t.Text}");
                        break;
                    case DataContent d:
                        string path = Path.Combine(outFolder, $"image-{imageCount++:D3}.png");
                        Serialization.AtomicFile.WriteAllBytes(path, d.Data.Span);
                        string what = d.AdditionalProperties?.TryGetValue(GillChatClient.DecisionKey, out var dec) == true ? dec?.ToString() ?? "" : "";
                        AnsiConsole.MarkupLineInterpolated($"[bold]gill>[/] [blue]{path}[/] [grey]({what})[/]");
                        break;
                }
            }
        }
    }

    private static void SaveTranscript(List<ChatMessage> history, string file)
    {
        var arr = new JsonArray();
        foreach (var m in history)
            arr.Add(new JsonObject
            {
                ["role"] = m.Role.Value,
                ["text"] = m.Text,
                ["images"] = new JsonArray(m.Contents.OfType<DataContent>().Select(d => (JsonNode)(d.Name ?? d.MediaType)).ToArray()),
            });
        Serialization.AtomicFile.WriteAllText(file, arr.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }
}
