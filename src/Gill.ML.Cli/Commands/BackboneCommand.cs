using System.CommandLine;
using Gill.ML.Modules;
using Gill.ML.Serialization;
using Spectre.Console;

namespace Gill.ML.Cli.Commands;

/// <summary><c>gill backbone …</c>: inspect and run frozen backbone checkpoints.</summary>
internal sealed class BackboneCommandProvider : ICommandProvider
{
    public Command Build()
    {
        var backbone = new Command("backbone", "Frozen backbones (OPT, GPT-2, CLIP vision/text) in Hugging Face folders: run them, list their tensors");
        backbone.Subcommands.Add(BuildRun());
        backbone.Subcommands.Add(BuildInspect());
        return backbone;
    }

    private static Command BuildRun()
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "Checkpoint folder (config.json + model.safetensors or a sharded index)", Required = true };
        var inputs = new Option<string>("--inputs") { Description = "Safetensors file with input_ids, attention_mask, pixel_values or inputs_embeds", Required = true };
        var output = new Option<string>("--output") { Description = "Safetensors file to write the outputs to (Hugging Face names)", Required = true };
        var device = new Option<string>("--device") { Description = "Torch device (cpu, cuda, cuda:1)", DefaultValueFactory = _ => "cpu" };
        var cmd = new Command("run", "Run a backbone folder on named inputs and write its outputs under Hugging Face's names (to compare with Python)");
        foreach (var o in new Option[] { checkpoint, inputs, output, device }) cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            try
            {
                var folder = parse.GetValue(checkpoint)!;
                var written = BackboneRunner.Run(folder, parse.GetValue(inputs)!, parse.GetValue(output)!, TorchSharp.torch.device(parse.GetValue(device)!));
                var table = new Table().AddColumn("output").AddColumn("shape");
                foreach (var (name, shape) in written) table.AddRow(Markup.Escape(name), Markup.Escape(SafeTensors.FormatShape(shape)));
                AnsiConsole.MarkupLine($"[green]{Markup.Escape(BackboneRunner.ReadModelType(folder))}[/] → {Markup.Escape(parse.GetValue(output)!)}");
                AnsiConsole.Write(table);
                return 0;
            }
            catch (Exception e) when (e is IOException or ArgumentException or InvalidDataException or NotSupportedException or KeyNotFoundException or UnauthorizedAccessException)
            {
                AnsiConsole.MarkupLine($"[red]error:[/] {Markup.Escape(e.Message)}");
                return 1;
            }
        });
        return cmd;
    }

    private static Command BuildInspect()
    {
        var checkpoint = new Argument<string>("checkpoint") { Description = "Checkpoint folder or .safetensors file" };
        var cmd = new Command("inspect", "List the tensors of a checkpoint (name, dtype, shape)");
        cmd.Arguments.Add(checkpoint);
        cmd.SetAction(parse =>
        {
            try
            {
                using var ck = SafeTensorsCheckpoint.Open(parse.GetValue(checkpoint)!);
                var table = new Table().AddColumn("tensor").AddColumn("dtype").AddColumn("shape");
                long total = 0;
                foreach (var (name, info) in ck.Tensors.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                {
                    table.AddRow(Markup.Escape(name), info.DType, Markup.Escape(info.ShapeText));
                    total += info.NumberOfElements;
                }
                AnsiConsole.Write(table);
                AnsiConsole.MarkupLine($"{ck.Tensors.Count} tensors, {total:N0} elements in {ck.Files.Count} file(s)");
                return 0;
            }
            catch (Exception e) when (e is IOException or InvalidDataException or NotSupportedException)
            {
                AnsiConsole.MarkupLine($"[red]error:[/] {Markup.Escape(e.Message)}");
                return 1;
            }
        });
        return cmd;
    }
}
